"""Teach a skill: a supervised warm-up on worked examples, then GRPO on the reward.

GRPO reinforces the answers of a group that score above the group's mean; an answer the
model never samples (a sentence reversed letter by letter, the right sum, an answer that
ends) never scores, so there is nothing to reinforce. Small models that learn such skills
are first shown worked examples, then sharpened by RL. One job does both, on one LoRA:

1. **warm-up**: SFT on worked examples (``--examples FILE.jsonl``, prompt + completion,
   see ``worked.py``; or the task's own, computed: ``tasks.Task.worked``), the loss on the
   answer only, so the skill becomes samplable and the answers end;
2. **GRPO**: the same LoRA trained on the reward (the task's, ``--reward-fn``, ``--judge``
   or ``--reward-model``) over the prompts (the task's, the chat history or a file), as
   ``diptych train grpo --from`` a warm-up adapter would, without a second job.

The held-out prompts are evaluated (greedy answers through llama.cpp: mean reward, how many
ended by themselves) before the warm-up, after it, every ``eval_every`` GRPO steps and at
the end; no worked example shares a prompt with them. The steps count on across both
phases in the progress lines, and a ``stage`` line marks where GRPO starts. One adapter
is registered; its meta.json holds both phases' data and metrics (``warmup``).

``--dry-run`` scores a few answers of the base and the worked examples' answers with the
reward: a reward that pays the worked answers little is broken, before anything trains.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from . import kinds, reinforce, tasks, turns, worked
from .errors import JobError
from .job import Job, sha256_of, split_eval


@dataclass
class Config(reinforce.ContinuingConfig):  # GRPO continues the warm-up's LoRA
    examples: str | None = None  # worked examples (JSONL); None: the task's own
    warmup_steps: int = 75  # optimizer steps of the warm-up: a file is passed over as often as they take
    warmup_examples: int | None = None  # at most this many (default: a task computes steps x batch)
    warmup_lr: float = 5e-4
    warmup_batch_size: int = 8
    steps: int | None = 30  # GRPO steps after the warm-up
    eval_size: int | None = 32  # held-out prompts: a skill is right or wrong, 16 would be coarse


def worked_examples(cfg: Config, task: tasks.Task, held: list[dict]) -> list[dict]:
    """The warm-up's worked examples: the file's, or the task's; none of them shares a
    prompt with the ``held`` out evaluation."""
    wanted = cfg.warmup_examples or cfg.warmup_steps * cfg.warmup_batch_size
    if cfg.examples:
        examples = worked.read(Path(cfg.examples))
    else:
        examples = task.worked(task.examples(wanted + len(held), random.Random(cfg.seed + 1)))
    held_keys = {worked.key(e) for e in held}
    kept = [e for e in examples if worked.key(e) not in held_keys]
    if not kept:
        raise JobError("every worked example shares its prompt with a held-out prompt: "
                       "give worked examples for other prompts")
    return kept[:wanted]


def _warmup_trainer(job: Job, model, tokenizer, examples: list[dict]):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg: Config = job.cfg
    rows = [{"prompt": e["prompt"], "completion": e["completion"], "truncated": False} for e in examples]
    return turns.keeping_unfinished(SFTTrainer, {"truncated": ("input_ids", "labels", "completion_mask")})(
        model=model,
        args=job.training_args(SFTConfig, cpu_bf16=True, max_length=cfg.max_length,
                               completion_only_loss=True, learning_rate=cfg.warmup_lr,
                               max_steps=cfg.warmup_steps,
                               per_device_train_batch_size=cfg.warmup_batch_size),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
    )


def train(job: Job) -> dict:
    from . import parent

    cfg: Config = job.cfg
    if not cfg.steps:
        raise JobError("the GRPO phase of a skill job is counted in steps: give --steps N")
    task = reinforce.task_of(cfg)
    prompts, source = reinforce.load_examples(cfg, task)
    train_prompts, eval_examples, held = split_eval(prompts, cfg.eval_size, cfg.seed)
    examples = worked_examples(cfg, task, eval_examples)
    functions, weights, reward_label = reinforce.build_rewards(cfg, task, job)

    model, tokenizer = job.load_base()
    warm = _warmup_trainer(job, model, tokenizer, examples)
    policy = warm.accelerator.unwrap_model(warm.model)
    if job.parent is not None:
        parent.check_shape(job.parent, policy.peft_config["default"])
        parent.load_into(policy, job.parent)
    warm_steps = cfg.warmup_steps
    job.span.update(offset=0, after=cfg.steps, total=warm_steps + cfg.steps)
    with reinforce.sampler(job, tokenizer) as rollouts:
        measure = reinforce.held_out(job, policy, tokenizer, rollouts, eval_examples, functions,
                                     weights, lambda: (0, warm_steps + cfg.steps))
        job.report["stage"] = "warmup"
        job.progress("eval_before")
        before = measure()
        warm_metrics = job.train(warm)
        warm_steps = warm_metrics["steps"]
        after_warmup, grpo_metrics, after = reinforce.after_warmup(
            job, policy, tokenizer, rollouts, train_prompts, functions, weights,
            (eval_examples, functions, weights), warm_steps)
    if job.main:
        policy.save_pretrained(job.out_dir, selected_adapters=["default"])  # not TRL's "ref" copy
    metrics = {"before": before, "warmup": after_warmup, "after": after,
               "train": {"loss": grpo_metrics["loss"], "steps": warm_steps + grpo_metrics["steps"],
                         "seconds": round(warm_metrics["seconds"] + grpo_metrics["seconds"], 1),
                         "warmup": warm_metrics, "grpo": grpo_metrics}}
    data = {"source": source, "reward": reward_label, "sampler": job.report["sampler"],
            "prompts": len(prompts), "train": len(train_prompts), "eval": len(eval_examples),
            "held_out": held, "sha256": sha256_of(prompts),
            "warmup": {"source": str(Path(cfg.examples).expanduser().resolve()) if cfg.examples
                       else f"task:{task.name}", "examples": len(examples),
                       "sha256": sha256_of(examples)}}
    return {"data": data, "metrics": metrics}


def dry_run(cfg: Config, out=None) -> int:
    return reinforce.dry_run(cfg, out, worked=worked_examples)


KIND = kinds.Kind(
    name="skill", short="Skill", title="Teach a skill: worked examples, then GRPO on your reward",
    help="teach a skill the base never shows: SFT on worked examples, then GRPO on the reward, "
         "as one job and one adapter",
    config=Config, train=train, data="prompts", writes_gguf=True, dry_run=dry_run,
    options=(
        kinds.Option("examples", "worked examples: JSON lines with a 'prompt' and a 'completion' "
                     "(default: the task's own)", worked.checked, metavar="FILE.jsonl", label="Worked examples",
                     widget="file"),
        kinds.Option("warmup_steps", "optimizer steps of the warm-up (default 75); the worked "
                     "examples are passed over as often as they take", kinds.positive(int),
                     label="Warm-up steps"),
        kinds.Option("warmup_examples", "use at most this many worked examples (default: all of "
                     "a file's; a task computes steps x batch size)", kinds.positive(int)),
        kinds.Option("warmup_lr", "the warm-up's learning rate", kinds.positive(float)),
        kinds.Option("warmup_batch_size", "worked examples per warm-up step", kinds.positive(int)),
        *reinforce.OPTIONS,
        kinds.Option("dry_run", "score a few answers of the model as it is, and the worked "
                     "answers, with the reward; train nothing", action="store_true"),
    ),
)
