"""GRPO: the model answers each prompt several times, and the better answers are reinforced.

Group Relative Policy Optimization needs no value model: for each prompt it samples
``num_generations`` answers, scores them, and uses each score minus the group's mean as
that answer's advantage. ``beta`` weighs a KL penalty to the base (the same weights with
the LoRA switched off). TRL's GRPOTrainer does the work.

The rewards (the task's, ``--reward-fn``, ``--judge``, ``--reward-model``), the prompts
(the task's, the chat history or a file), the sampler (llama.cpp on the CPU, TRL's
generation on CUDA) and the trainer are ``reinforce.py``'s, shared with ``skill.py``.

Before and after training, and every ``eval_every`` steps, greedy answers to held-out
prompts are scored with the same rewards (phase ``eval``: the mean, and a few answers with
their rewards, so the user sees the model change while it trains).

``--dry-run`` samples a few answers for a few prompts from the model as it is, prints
each with its reward(s), and trains nothing: a way to check a reward file in seconds.

Defaults (chosen on the bundled model, two CPU cores; bench/grpo_curves.py, bench/skill.py
and bench/RESULTS.md): 2 prompts x 8 answers of at most 24 tokens a step (which hold the
tasks' answers), sampled at temperature 0.8 (at 1.0 the base's samples are mostly noise
from its 262k vocabulary's long tail), learning rate 3e-4, and no KL term (``beta`` 0, as
TRL's default: no reference pass; the evaluations still measure the KL from the base).
What the base never samples GRPO cannot reinforce: ``skill.py`` first shows it worked
examples.
"""

from __future__ import annotations

from . import kinds, reinforce
from .job import Job, sha256_of, split_eval
from .reinforce import Config, dry_run


def train(job: Job) -> dict:

    cfg: Config = job.cfg
    task = reinforce.task_of(cfg)
    examples, source = reinforce.load_examples(cfg, task)
    train_examples, eval_examples, held = split_eval(examples, cfg.eval_size, cfg.seed)
    functions, weights, reward_label = reinforce.build_rewards(cfg, task, job)

    model, tokenizer = job.load_base()
    with reinforce.sampler(job, tokenizer) as rollouts:
        grpo = reinforce.trainer(job, model, tokenizer, train_examples, functions, weights, rollouts)
        policy = grpo.accelerator.unwrap_model(grpo.model)
        measure = reinforce.held_out(job, policy, tokenizer, rollouts, eval_examples, functions, weights,
                                     lambda: (grpo.state.global_step, grpo.state.max_steps or cfg.steps))
        if cfg.eval_every:
            grpo.add_callback(reinforce.eval_callback(measure, cfg.eval_every))
        metrics = job.fit(grpo, measure)
    data = {"source": source, "reward": reward_label, "sampler": job.report["sampler"],
            "prompts": len(examples), "train": len(train_examples), "eval": len(eval_examples),
            "held_out": held, "sha256": sha256_of(examples)}
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="grpo", short="GRPO", title="GRPO: sample, score, reinforce the better answers (with a KL pull to the base)",
    help="GRPO against your reward functions, a rubric judge, a task's reward or a reward model",
    config=Config, train=train, data="prompts", writes_gguf=True, dry_run=dry_run,
    continuing=reinforce.CONTINUING,
    options=(
        *reinforce.OPTIONS,
        kinds.Option("dry_run", "sample and score a few answers with the model as it is; train nothing",
                     action="store_true"),
    ),
)
