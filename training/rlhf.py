"""RLHF from your votes: a reward model learns your taste from the pairs, then GRPO
maximises it, as one job and one adapter.

DPO turns pairs straight into a policy. RLHF first learns a function that scores any
answer (a reward model), then lets the model try answers of its own and reinforces those
the function prefers, on prompts beyond the voted ones. Three phases, one LoRA:

1. **reward model** (``reward_model.py``): the base with a scoring head and a LoRA of its
   own, fitted to the training pairs. It comes first because it decides whether the job
   can go on: one that orders the held-out pairs no better than a coin toss would have
   GRPO chase noise, so the job stops there with one line, before the policy trains.
2. **warm-up** (``supervised.py``): SFT on the training pairs' chosen answers (the winners
   and the answers written), so the model already answers in the voted manner when it
   samples: GRPO can only reinforce what the model samples.
3. **GRPO** (``reinforce.py``): the warm-up's LoRA trained on the reward model's rank of
   each answer within its group, over the voted prompts (or ``--prompts-from
   history|FILE``), with a KL pull back to the base: a learnt reward is least right far
   from the answers it learnt from.

The pairs of a fifth of the voted prompts are held out of every phase: the reward model's
pair accuracy is measured on them, and the policy's greedy answers to their prompts are
scored by the reward model (the base, after the warm-up, every ``eval_every`` GRPO steps
and at the end). The steps count on across the phases; a ``stage`` line marks each change
(``stage: "warmup"`` with the reward model's ``pair_accuracy``, then ``stage: "grpo"``).
meta.json holds every phase's data and metrics (``reward_model``, ``warmup``). The reward
model is not kept: the one adapter is the policy's LoRA.

``--dry-run`` trains the reward model, keeps nothing, and prints its scores of a few
answers of the base and of the held-out pairs' chosen answers.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from diptych.models.group_sampler import GroupSampling

from . import kinds, progress, reinforce, reward_model, supervised, worked
from .errors import JobError
from .examples import load_pairs
from .job import Job, planned_steps, sha256_of, split_eval

# A reward model is checked on held-out pairs before GRPO trusts it: at least this many
# pairs, of which at least MIN_HELD_OUT held out, or the check says nothing.
MIN_PAIRS = 8
MIN_HELD_OUT = 2
REWARD = "reward model on the pairs"


@dataclass
class Config(reinforce.ContinuingConfig):  # GRPO continues the warm-up's LoRA
    data: str | None = None  # JSON lines of preference pairs; None: the votes in the store
    prompts_from: str = "votes"  # GRPO's prompts: the voted ones, "history" or a file
    reward_steps: int | None = None  # None: reward_epochs passes over the training pairs
    reward_epochs: float = 3.0
    reward_lr: float = 1e-4
    reward_batch_size: int = 4
    warmup_steps: int | None = None  # None: warmup_epochs passes over the chosen answers
    warmup_epochs: float = 2.0
    warmup_lr: float = 2e-4
    warmup_batch_size: int = 4
    steps: int | None = 30  # GRPO steps after the warm-up
    beta: float = 0.04  # a learnt reward: keep the policy near the answers it was learnt from
    max_completion_length: int = 32
    eval_size: int | None = None  # held-out prompts; None: a fifth of the voted ones


def split(pairs: list[dict], eval_size: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """(training pairs, held-out pairs): the pairs of a fifth of the prompts (or
    ``eval_size`` prompts) held out, so no phase trains on a held-out prompt (a written
    answer gives two pairs with one prompt). JobError when too few pairs are left to check
    a reward model on."""
    by_prompt: dict[str, list[dict]] = {}
    for pair in pairs:
        by_prompt.setdefault(worked.key(pair), []).append(pair)
    train_keys, held_keys, held_out = split_eval(list(by_prompt), eval_size, seed)
    train = [p for k in train_keys for p in by_prompt[k]]
    held = [p for k in held_keys for p in by_prompt[k]] if held_out else []
    if len(pairs) < MIN_PAIRS or len(held) < MIN_HELD_OUT or not train:
        raise JobError(
            f"{len(pairs)} preference pairs on {len(by_prompt)} prompts are too few for a reward "
            f"model: an RLHF job needs at least {MIN_PAIRS}, with the pairs of a fifth of the "
            f"prompts (at least {MIN_HELD_OUT} pairs) held out to check that it orders them "
            "better than a coin toss; vote on more answers (or train DPO on these)")
    return train, held


def warmup_examples(pairs: list[dict]) -> list[dict]:
    """The chosen answers of ``pairs`` as SFT rows, each once (a written answer is the chosen
    side of two pairs)."""
    rows = ({"prompt": p["prompt"], "completion": p["chosen"], "truncated": p["chosen_truncated"]}
            for p in pairs)
    return list({json.dumps(r, sort_keys=True): r for r in rows}.values())


def prompt_examples(pairs: list[dict]) -> list[dict]:
    """The distinct prompts of ``pairs``, as GRPO's rows."""
    return list({worked.key(p): {"prompt": p["prompt"]} for p in pairs}.values())


def grpo_prompts(cfg: Config, train_pairs: list[dict], held: list[dict]) -> tuple[list[dict], str]:
    """GRPO's training prompts and their source: the training pairs' prompts, or the chat
    history's or a file's (``reinforce.load_examples``), without the held-out ones."""
    if cfg.prompts_from == "votes":
        examples, source = prompt_examples(train_pairs), "votes"
    else:
        examples, source = reinforce.load_examples(cfg, reinforce.task_of(cfg))
    held_keys = {worked.key(e) for e in held}
    kept = [e for e in examples if worked.key(e) not in held_keys][: cfg.max_prompts]
    if not kept:
        raise JobError(f"no prompts in {source} that are not held out to evaluate the job")
    per_step = max(1, cfg.batch_size // cfg.num_generations)
    if len(kept) < per_step:  # TRL would take no step at all, and say nothing
        raise JobError(f"{len(kept)} training prompts are fewer than one GRPO step takes ({per_step}: "
                       f"--batch-size {cfg.batch_size} answers, {cfg.num_generations} a prompt): "
                       "lower --batch-size, or give more prompts (--prompts-from)")
    return kept, source


def train_reward_model(job: Job, train_pairs: list[dict], held_pairs: list[dict]):
    """The reward phase: (scorer, its tokenizer, metrics) of a reward model trained on
    ``train_pairs`` and measured on ``held_pairs`` before and after."""
    from . import evaluate

    cfg: Config = job.cfg
    model, tokenizer = job.load_base(reward_head=True)
    trainer = reward_model.trainer(
        job, model, tokenizer, train_pairs, learning_rate=cfg.reward_lr,
        max_steps=cfg.reward_steps or -1, num_train_epochs=cfg.reward_epochs,
        per_device_train_batch_size=cfg.reward_batch_size)
    scorer = trainer.accelerator.unwrap_model(trainer.model)
    job.report["stage"] = "reward"
    job.progress("eval_before")
    before = evaluate.reward_model(scorer, tokenizer, held_pairs)
    trained = job.train(trainer)
    after = evaluate.reward_model(scorer, tokenizer, held_pairs)
    return scorer.eval(), tokenizer, {"before": before, "after": after, "train": trained}


def refuse_chance(measured: dict) -> None:
    """JobError when the reward model ``measured`` (``evaluate.reward_model``) orders the
    held-out pairs no better than a coin toss."""
    accuracy = measured["pair_accuracy"]
    if accuracy <= 0.5:
        raise JobError(
            f"the reward model orders {progress.right(measured)} held-out pairs right "
            f"({accuracy:.2f}), no better than a coin toss: GRPO would chase noise, so the job "
            "stops here; vote on more pairs of one taste, or train it longer (--reward-epochs)")


def train(job: Job) -> dict:
    from . import parent, reward_functions
    from .base_weights import load_base

    cfg: Config = job.cfg
    if not cfg.steps:
        raise JobError("the GRPO phase of an RLHF job is counted in steps: give --steps N")
    reinforce.task_of(cfg)  # checks the sampler
    pairs, data = load_pairs(cfg)
    train_pairs, held_pairs = split(pairs, cfg.eval_size, cfg.seed)
    answers = warmup_examples(train_pairs)
    prompts, prompt_source = grpo_prompts(cfg, train_pairs, held_pairs)
    eval_examples = prompt_examples(held_pairs)

    reward_steps = planned_steps(len(train_pairs), cfg.reward_batch_size, cfg.reward_steps, cfg.reward_epochs)
    warm_steps = planned_steps(len(answers), cfg.warmup_batch_size, cfg.warmup_steps, cfg.warmup_epochs)
    job.span.update(offset=0, after=warm_steps + cfg.steps, total=reward_steps + warm_steps + cfg.steps)
    scorer, scorer_tokenizer, reward_metrics = train_reward_model(job, train_pairs, held_pairs)
    refuse_chance(reward_metrics["after"])
    reward_steps = reward_metrics["train"]["steps"]
    job.progress("stage", stage="warmup", step=reward_steps, total=reward_steps + warm_steps + cfg.steps,
                 pair_accuracy=reward_metrics["after"]["pair_accuracy"], n=len(held_pairs))
    score = reward_functions.as_reward_function(scorer, scorer_tokenizer)
    rank = reward_functions.as_reward_function(scorer, scorer_tokenizer, rank=True)

    model, tokenizer = load_base(job.base)
    warm = supervised.trainer(job, model, tokenizer, answers, learning_rate=cfg.warmup_lr,
                              max_steps=cfg.warmup_steps or -1, num_train_epochs=cfg.warmup_epochs,
                              per_device_train_batch_size=cfg.warmup_batch_size)
    policy = warm.accelerator.unwrap_model(warm.model)
    if job.parent is not None:
        parent.check_shape(job.parent, policy.peft_config["default"])
        parent.load_into(policy, job.parent)
    job.span.update(offset=reward_steps, after=cfg.steps, total=reward_steps + warm_steps + cfg.steps)
    with reinforce.sampler(job, tokenizer) as rollouts:
        # held out: the reward model's score of one greedy answer a prompt (a rank needs a group)
        measure = reinforce.held_out(job, policy, tokenizer, rollouts, eval_examples, [score], [1.0],
                                     lambda: (reward_steps, reward_steps + warm_steps + cfg.steps))
        before = measure()
        job.report["stage"] = "warmup"
        warm_metrics = job.train(warm)
        done = reward_steps + warm_metrics["steps"]
        after_warmup, grpo_metrics, after = reinforce.after_warmup(
            job, policy, tokenizer, rollouts, prompts, [rank], [1.0], (eval_examples, [score], [1.0]), done)
    if job.main:
        policy.save_pretrained(job.out_dir, selected_adapters=["default"])  # not TRL's "ref" copy
    phases = {"reward_model": reward_metrics["train"], "warmup": warm_metrics, "grpo": grpo_metrics}
    metrics = {"reward_model": {k: reward_metrics[k] for k in ("before", "after")},
               "before": before, "warmup": after_warmup, "after": after,
               "train": {"loss": grpo_metrics["loss"], "steps": done + grpo_metrics["steps"],
                         "seconds": round(sum(p["seconds"] for p in phases.values()), 1), **phases}}
    data.update(train=len(train_pairs), eval=len(eval_examples), held_out=True, eval_pairs=len(held_pairs),
                reward=f"{REWARD}, ranking each group's answers", sampler=job.report["sampler"],
                warmup={"examples": len(answers), "sha256": sha256_of(answers)},
                prompts={"source": prompt_source, "train": len(prompts), "sha256": sha256_of(prompts)})
    return {"data": data, "metrics": metrics}


# what a dry run shows: answers of the base to a few held-out prompts, a few chosen answers
DRY_RUN_PROMPTS, DRY_RUN_ANSWERS, DRY_RUN_CHOSEN = 3, 4, 6


def dry_run(cfg: Config, out=None) -> int:
    """Train the reward model (keeping nothing), then print its scores of a few answers of
    the base to held-out prompts and of the held-out pairs' chosen answers; the same one
    line as the job when it orders them no better than a coin toss. Returns the exit code."""
    from . import job as jobs
    from . import reward_functions
    from .rollouts import LlamaCppRollouts

    out = out or sys.stdout
    jsonl = cfg.progress == "jsonl"
    started = time.monotonic()
    jobs.quiet_libraries()
    reinforce.task_of(cfg)
    pairs, data = load_pairs(cfg)
    train_pairs, held_pairs = split(pairs, cfg.eval_size, cfg.seed)
    report = jobs.Progress(False)  # human lines on stderr; JSON lines on ``out`` with jsonl
    report.out = out if jsonl else None
    with tempfile.TemporaryDirectory() as tmp:
        job = Job("rlhf", cfg, report, Path(tmp) / "job")
        if not job.base.is_file():
            raise JobError(f"{job.base}: no such model file")
        jobs.check_limits(cfg, job.base)
        scorer, tokenizer, metrics = train_reward_model(job, train_pairs, held_pairs)
        score = reward_functions.as_reward_function(scorer, tokenizer)
        examples = prompt_examples(held_pairs)[:DRY_RUN_PROMPTS]
        sampling = GroupSampling(temperature=cfg.temperature, max_tokens=cfg.max_completion_length,
                                 seed=cfg.seed)
        n = min(cfg.num_generations, DRY_RUN_ANSWERS)
        rollouts = LlamaCppRollouts(job.base, None, num_generations=n, max_seqs=n * len(examples),
                                    sampling=sampling, workdir=Path(tmp))
        try:
            groups = rollouts.answer(examples, n, sampling)
        finally:
            rollouts.close()
    scored = reinforce.Scored(out, jsonl, [score], [1.0])
    base = [r for example, group in zip(examples, groups)
            for r in scored.group(example, [(a.text, a.finish_reason, a.ids) for a in group])]
    if not jsonl:
        out.write("\n## The chosen answers of held-out pairs, scored by the same reward model\n")
    chosen = [scored.group({"prompt": p["prompt"]}, [(p["chosen"][-1]["content"],
                                                      "length" if p["chosen_truncated"] else "stop", None)])[0]
              for p in held_pairs[:DRY_RUN_CHOSEN]]
    after = metrics["after"]
    refuse_chance(after)  # after the scores: they show what it learnt instead
    summary = {"dry_run": True, "reward": REWARD, "source": data["source"],
               "pair_accuracy": after["pair_accuracy"], "n": after["n"],
               "base": sum(base) / len(base), "chosen": sum(chosen) / len(chosen),
               "seconds": round(time.monotonic() - started, 1)}
    out.write(progress.line("done", keys=False, **summary) + "\n" if jsonl else
              f"\nThe reward model, trained on {len(train_pairs)} pairs, orders "
              f"{progress.right(after)} held-out pairs right "
              f"({after['pair_accuracy']:.2f}); mean score of the base's {len(base)} answers "
              f"{summary['base']:.3g}, of {len(chosen)} chosen answers {summary['chosen']:.3g}; "
              f"{summary['seconds']} s, nothing was kept.\n")
    out.flush()
    return 0


# GRPO's options that are not about its reward or its prompts: the job's reward is its own
# reward model, its prompts the voted ones unless --prompts-from says otherwise.
_NOT_GRPO = {"task", "reward_fn", "reward_timeout", "reward_weight", "judge", "judge_model",
             "reward_model", "reward_rank", "prompts_from", "beta"}

KIND = kinds.Kind(
    name="rlhf", short="RLHF", title="RLHF from votes: a reward model of your taste, then GRPO on it",
    help="RLHF on preference pairs: a reward model, a warm-up on the chosen answers, then GRPO "
         "on the reward model's ranking, as one job and one adapter",
    config=Config, train=train, data="pairs", writes_gguf=True, dry_run=dry_run, reinforces=True,
    options=(
        kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NEW_VOTES,
        kinds.Option("prompts_from", "GRPO's prompts: the voted ones (default), your chat history, "
                     "or a file (text: one prompt a line; .jsonl: a 'prompt' per line)",
                     metavar="votes|history|FILE"),
        kinds.Option("reward_epochs", "the reward model's passes over the pairs (default 3)",
                     kinds.positive(float), group="reward_length", label="Reward model epochs"),
        kinds.Option("reward_steps", "the reward model's optimizer steps (instead of epochs)",
                     kinds.positive(int), group="reward_length"),
        kinds.Option("reward_lr", "the reward model's learning rate", kinds.positive(float)),
        kinds.Option("reward_batch_size", "pairs per reward-model step", kinds.positive(int)),
        kinds.Option("warmup_epochs", "the warm-up's passes over the chosen answers (default 2)",
                     kinds.positive(float), group="warmup_length"),
        kinds.Option("warmup_steps", "the warm-up's optimizer steps (instead of epochs)",
                     kinds.positive(int), group="warmup_length", label="Warm-up steps"),
        kinds.Option("warmup_lr", "the warm-up's learning rate", kinds.positive(float)),
        kinds.Option("warmup_batch_size", "chosen answers per warm-up step", kinds.positive(int)),
        kinds.Option("beta", "weight of GRPO's KL pull to the base (default 0.04; 0: none)",
                     kinds.non_negative, label="KL weight (beta)"),
        *(o for o in reinforce.OPTIONS if o.field not in _NOT_GRPO),
        kinds.Option("dry_run", "train the reward model, show its scores of a few answers of the "
                     "base and of chosen answers; keep nothing", action="store_true"),
    ),
)
