"""GRPO's parts that the kinds training with it share (``grpo.py``, ``skill.py``): the
settings, the prompts, the rewards, the sampler, the trainer, the held-out evaluation and
the dry run.

Rewards (``reward_functions.py``): the rewards given (``--reward-fn FILE.py:NAME``,
repeatable, each with a ``--reward-weight``; ``--judge RUBRIC``; ``--reward-model NAME``),
or else the task's own. Prompts: the task's (``--task``, ``tasks.py``; each with its known
answer in a ``target`` column), the user's chat history (``Store.recent_prompts``), or a
file (text: one prompt per line; ``.jsonl``: a ``prompt`` per line, a string or a message
list, and any other keys the rewards want).

Answers are sampled through llama.cpp with the LoRA as it is at each step
(``rollouts.py``), where that measures faster than ``transformers.generate`` (on the CPU:
see bench/RESULTS.md), and with TRL's own generation on CUDA, where batched generation on
the GPU is the fast path. The progress lines say which (``sampler``).

``dry_run`` samples a few answers for a few prompts from the model as it is, prints each
with its reward(s), and trains nothing: a way to check a reward file in seconds.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from diptych.models.group_sampler import GroupSampling

from . import kinds, progress, prompt_sets, tasks
from .errors import JobError
from .job import Job, JobConfig, check_limits, split_eval

SAMPLERS = ("auto", "llama.cpp", "transformers")
SCALES = ("group", "batch", "none")
# How a step's token losses are summed (TRL's loss_type): per answer then averaged (grpo),
# over all answer tokens (dapo, TRL's default), or over a constant (dr_grpo).
LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo")


# GRPO's settings where it continues a trained LoRA (a skill's warm-up, or --from): gentler
# steps than from scratch, ramped up (a fresh optimizer's first steps are full-size in every
# direction and undid part of what the warm-up taught); whole-vocabulary sampling, which
# is no longer noise once the model answers in the task's format; and no scaling by the
# group's spread, which made a near miss's small extra reward as loud as a right answer
# (bench/RESULTS.md, "Teaching a skill").
CONTINUING = {"lr": 1e-4, "lr_ramp": 0.3, "temperature": 1.0, "scale_rewards": "none"}


@dataclass
class Config(JobConfig):
    task: str = "length"  # reverse | reverse_words | arith | length
    reward_fn: list[str] = field(default_factory=list)  # FILE.py:NAME, each a reward function
    reward_timeout: float = 60.0  # seconds one call of a --reward-fn may take (a group)
    reward_weight: list[float] = field(default_factory=list)  # one per reward (default 1 each)
    judge: str | None = None  # a rubric: P(yes) of the judge model is a reward
    judge_model: str | None = None  # the judge's GGUF; None: the base
    reward_model: str | None = None  # a reward adapter's name: its score is a reward
    reward_rank: bool = False  # the reward model's rank of each answer within its group, not its score
    prompts_from: str = "task"  # task | history | a file
    max_prompts: int = 64  # training prompts (held-out ones come on top)
    beta: float = 0.0  # weight of the KL penalty to the base; 0, as TRL: no reference pass
    num_generations: int = 8  # answers sampled per prompt
    max_completion_length: int = 24  # tokens per sampled answer
    temperature: float = 0.8
    scale_rewards: str = "group"  # divide advantages by the std of the group, the batch, or nothing
    loss_type: str = "dapo"
    steps: int | None = 60
    batch_size: int = 16  # answers per step: 2 prompts x 8 generations
    lr: float = 3e-4
    lr_ramp: float = 0.0  # the share of the steps over which the learning rate ramps up from 0
    eval_size: int | None = 16
    eval_every: int = 5  # steps between held-out evaluations shown while training
    sampler: str = "auto"  # auto: llama.cpp on the CPU, TRL's generate on CUDA
    dry_run: bool = False  # sample and score a few answers, train nothing


@dataclass
class ContinuingConfig(Config):
    """GRPO's settings in a job whose GRPO continues a LoRA it trained first (a warm-up)."""

    lr: float = CONTINUING["lr"]
    lr_ramp: float = CONTINUING["lr_ramp"]
    temperature: float = CONTINUING["temperature"]
    scale_rewards: str = CONTINUING["scale_rewards"]


def load_examples(cfg: Config, task: tasks.Task) -> tuple[list[dict], str]:
    """Prompts (with the task's answer columns) for training and evaluation, and their source."""
    n = cfg.max_prompts + (cfg.eval_size or 0)
    if cfg.prompts_from == "task":
        return task.examples(n, random.Random(cfg.seed)), f"task:{task.name}"
    if task.needs_target and not _given_rewards(cfg):
        raise JobError(f"the {task.name} task scores answers against its own prompts' known "
                       "answers: use --prompts-from task, or another reward (--task length, "
                       "--reward-fn, --judge, --reward-model) with other prompts")
    if cfg.prompts_from == "history":
        from .store import Store

        with Store.open(cfg.data_dir) as store:
            examples = [{"prompt": p} for p in store.recent_prompts(n)]
        source = "history"
    else:
        path = Path(cfg.prompts_from).expanduser()
        examples, source = prompt_sets.read_file(path)[:n], str(path.resolve())
    if not examples:
        raise JobError(f"no prompts in {source}")
    return examples, source


def _given_rewards(cfg: Config) -> bool:
    return bool(cfg.reward_fn or cfg.judge or cfg.reward_model)


def build_rewards(cfg: Config, task: tasks.Task, job: Job | None) -> tuple[list, list[float], str]:
    """(reward functions, their weights, a label for meta.json): the rewards given, else the task's."""
    from . import reward_functions, reward_process

    functions = [reward_process.load_function(spec, cfg.reward_timeout) for spec in cfg.reward_fn]
    if cfg.judge:
        functions.append(reward_functions.judge(cfg.judge, cfg.judge_model))
    if cfg.reward_model:
        base = job.base if job else _base(cfg)
        scorer, scorer_tokenizer = reward_functions.load_reward_model(
            cfg.reward_model, base, cfg.data_dir, job.device if job else None)
        functions.append(reward_functions.as_reward_function(scorer, scorer_tokenizer,
                                                             rank=cfg.reward_rank))
    if not functions:
        functions = [reward_functions.checked(task.reward, f"task:{task.name}")]
    weights = list(cfg.reward_weight) or [1.0] * len(functions)
    if len(weights) != len(functions):
        raise JobError(f"{len(weights)} --reward-weight values for {len(functions)} rewards: "
                       "give one weight per reward, or none")
    labels = [*cfg.reward_fn, *(["judge: " + cfg.judge] if cfg.judge else []),
              *([cfg.reward_model] if cfg.reward_model else [])] or [f"task:{task.name}"]
    return functions, weights, " + ".join(
        label if w == 1.0 else f"{w:g} x {label}" for w, label in zip(weights, labels))


def _base(cfg: Config) -> Path:
    from diptych.models import catalog

    return Path(cfg.model).expanduser() if cfg.model else catalog.bundled_model_path()


def task_of(cfg: Config) -> tasks.Task:
    if cfg.task not in tasks.TASKS:
        raise JobError(f"unknown task {cfg.task!r}; choose one of {', '.join(tasks.TASKS)}")
    if cfg.sampler not in SAMPLERS:
        raise JobError(f"unknown sampler {cfg.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return tasks.TASKS[cfg.task]


def _sampling(cfg: Config) -> GroupSampling:
    return GroupSampling(temperature=cfg.temperature, max_tokens=cfg.max_completion_length,
                         seed=cfg.seed)


def evaluation(rollouts, examples: list[dict], functions, weights, max_tokens: int) -> dict:
    """Greedy answers to held-out ``examples`` through llama.cpp: the mean weighted reward,
    how many answers ended by themselves, how many earned the full reward (1: for ``arith``,
    exactly right), and a few answers with their rewards."""
    from . import reward_functions

    answers = [group[0] for group in rollouts.answer(
        examples, 1, GroupSampling(temperature=0.0, max_tokens=max_tokens))]
    completions = [[{"role": "assistant", "content": a.text}] for a in answers]
    columns = {k: [e[k] for e in examples] for k in examples[0] if k != "prompt"}
    scores = reward_functions.weighted(functions, weights)(
        [e["prompt"] for e in examples], completions, **columns,
        **reward_functions.outside_training([a.ids for a in answers]))
    samples = [{"prompt": e["prompt"][-1]["content"], "answer": a.text, "reward": round(r, 3)}
               for e, a, r in zip(examples[:4], answers, scores)]
    return {"reward": sum(scores) / len(scores), "ended": sum(a.finish_reason == "stop" for a in answers),
            "full": sum(s >= 1.0 for s in scores), "n": len(examples), "samples": samples, "answers": [a.text for a in answers]}


def eval_callback(measure, every: int):
    from transformers import TrainerCallback

    class HeldOut(TrainerCallback):
        """Every ``every`` steps (and at the last one), the held-out evaluation."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0 and state.global_step != state.max_steps:
                measure()

    return HeldOut()


def after_warmup(job: Job, policy, tokenizer, rollouts, prompts: list[dict], functions, weights,
                 held: tuple[list[dict], list, list], done: int) -> tuple[dict, dict, dict]:
    """GRPO on ``prompts`` continuing the LoRA a warm-up trained for ``done`` steps (a skill's,
    an RLHF job's): the ``stage`` line, the held-out evaluation after the warm-up, GRPO with
    one every ``eval_every`` steps, and one at the end. ``held``: the held-out examples and
    the rewards (functions, weights) they are measured with. Returns (after the warm-up,
    GRPO's training metrics, after GRPO)."""
    cfg: Config = job.cfg
    job.span.update(offset=done, after=0, total=done + cfg.steps)
    job.report["stage"] = "grpo"
    job.progress("stage", stage="grpo", step=done, total=done + cfg.steps)
    grpo = None
    measure = held_out(job, policy, tokenizer, rollouts, *held,
                       lambda: (done + (grpo.state.global_step if grpo else 0), done + cfg.steps))
    warmed = measure()
    if rollouts is not None:
        rollouts.step_offset = done
    grpo = trainer(job, policy, tokenizer, prompts, functions, weights, rollouts)
    if cfg.eval_every:
        grpo.add_callback(eval_callback(measure, cfg.eval_every))
    metrics = job.train(grpo)
    job.progress("eval_after")
    return warmed, metrics, measure()


def choose_sampler(cfg: Config, cuda: bool) -> str:
    if cfg.sampler != "auto":
        return cfg.sampler
    return "transformers" if cuda else "llama.cpp"


@contextmanager
def sampler(job: Job, tokenizer):
    """The llama.cpp sampler of a job's rollouts and evaluations (None: TRL's own generation)."""
    from .rollouts import LlamaCppRollouts

    cfg: Config = job.cfg
    job.report["sampler"] = choose_sampler(cfg, job.cuda)
    if job.report["sampler"] != "llama.cpp":
        yield None
        return
    # each process samples with its own llama.cpp; only the main one has the job's folder
    workdir = job.out_dir if job.main else Path(tempfile.mkdtemp(prefix="diptych-rollouts-"))
    rollouts = LlamaCppRollouts(job.base, tokenizer, num_generations=cfg.num_generations,
                                max_seqs=max(cfg.batch_size, cfg.eval_size or 1, 8),
                                sampling=_sampling(cfg), workdir=workdir)
    try:
        yield rollouts
    finally:
        rollouts.close()
        if not job.main:
            shutil.rmtree(workdir, ignore_errors=True)


def trainer(job: Job, model, tokenizer, examples: list[dict], functions, weights, rollouts, **args):
    """TRL's GRPOTrainer for ``job``: a new LoRA on the base ``model``, or, when ``model``
    is already a PEFT model (a warm-up's), that LoRA trained on. ``args`` override GRPOConfig's."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    cfg: Config = job.cfg
    return GRPOTrainer(
        model=model,
        reward_funcs=functions,
        args=job.training_args(
            GRPOConfig, cpu_bf16=True, beta=cfg.beta, num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
            reward_weights=weights, scale_rewards=cfg.scale_rewards, loss_type=cfg.loss_type,
            warmup_steps=cfg.lr_ramp,
            **args,
        ),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=None if isinstance(model, PeftModel) else job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
        rollout_func=rollouts,
    )


def held_out(job: Job, policy, tokenizer, rollouts, examples: list[dict], functions, weights,
             step: Callable[[], tuple[int, int]]) -> Callable[[], dict]:
    """The held-out evaluation of ``policy`` on ``examples``, also reported as an ``eval``
    line at ``step()`` (step, total; step 0: the base): greedy answers, their mean reward,
    how many ended by themselves, and the KL from the base on a few of them (the plots'
    "KL from base", which TRL does not compute when no KL term is trained)."""
    from . import evaluate, reward_functions

    cfg: Config = job.cfg

    def measure() -> dict:
        at, total = step()
        if rollouts is None:
            result = evaluate.generation(policy, tokenizer, examples, reward_functions.weighted(functions, weights),
                                         cfg.max_completion_length)
        else:
            rollouts.sync(policy, at)
            result = evaluation(rollouts, examples, functions, weights, cfg.max_completion_length)
            answered = [{"prompt": e["prompt"], "completion": [{"role": "assistant", "content": a}]}
                        for e, a in zip(examples, result.pop("answers")) if a]
            result["kl"] = evaluate.answer_kl(policy, tokenizer, answered[:KL_ANSWERS])
        job.progress("eval", step=at, total=total, reward=result["reward"], kl=result.get("kl"),
                     samples=result["samples"], ended=result.get("ended"), full=result.get("full"),
                     n=result["n"])
        return result

    return measure


KL_ANSWERS = 4  # held-out answers the evaluations' KL is measured on: two forward passes each


def dry_run(cfg: Config, out=None, worked: Callable[[Config, tasks.Task, list[dict]], list[dict]] | None = None) -> int:
    """Sample answers for a few prompts with the model as it is, print them with their
    rewards; no training, no torch unless a reward model needs it. ``worked(cfg, task,
    held_out)``: a job's worked examples, whose written answers are scored too (a reward
    that pays them little is broken). Returns the exit code."""
    from .rollouts import LlamaCppRollouts

    out = out or sys.stdout
    jsonl = cfg.progress == "jsonl"
    started = time.monotonic()
    task = task_of(cfg)
    base = _base(cfg)
    if not base.is_file():
        raise JobError(f"{base}: no such model file")
    check_limits(cfg, base)
    examples, source = load_examples(cfg, task)
    shown_worked = worked(cfg, task, split_eval(examples, cfg.eval_size, cfg.seed)[1]) if worked else []
    examples = examples[: min(3, len(examples))]
    functions, weights, label = build_rewards(cfg, task, None)
    n = min(cfg.num_generations, 4)
    with tempfile.TemporaryDirectory() as tmp:
        rollouts = LlamaCppRollouts(base, None, num_generations=n, max_seqs=n * len(examples),
                                    sampling=_sampling(cfg), workdir=Path(tmp))
        try:
            groups = rollouts.answer(examples, n, _sampling(cfg))
        finally:
            rollouts.close()
    scored = Scored(out, jsonl, functions, weights)
    for example, group in zip(examples, groups):
        scored.group(example, [(a.text, a.finish_reason, a.ids) for a in group])
    summary = {"dry_run": True, "reward": label, "source": source}
    text = f"\n{len(examples)} prompts x {n} answers of the model as it is"
    if shown_worked:
        if not jsonl:
            out.write(f"\n## Worked examples: their written answers, scored by the same reward\n")
        rewards_of = [scored.group({k: v for k, v in e.items() if k != "completion"},
                                   [(e["completion"][-1]["content"], "stop", None)])[0]
                      for e in shown_worked]
        summary["worked"] = {"n": len(rewards_of), "reward": sum(rewards_of) / len(rewards_of)}
        text += (f" and {len(rewards_of)} worked answers (mean reward {summary['worked']['reward']:.3f}:"
                 " what the skill is worth)")
    summary["seconds"] = round(time.monotonic() - started, 1)
    out.write(progress.line("done", keys=False, **summary) + "\n" if jsonl else
              f"{text} scored by {label} in {summary['seconds']} s; nothing was trained.\n")
    out.flush()
    return 0


class Scored:
    """Prints answers with their rewards: human lines, or ``sample`` JSON lines."""

    def __init__(self, out, jsonl: bool, functions, weights):
        self.out, self.jsonl, self.functions, self.weights = out, jsonl, functions, weights

    def group(self, example: dict, answers: list[tuple[str, str, list | None]]) -> list[float]:
        """Score and print ``answers`` (text, finish reason, token ids) to ``example``;
        returns their weighted rewards."""
        from . import reward_functions

        completions = [[{"role": "assistant", "content": text}] for text, _, _ in answers]
        columns = {k: [example[k]] * len(answers) for k in example if k != "prompt"}
        columns.update(reward_functions.outside_training([ids or [] for _, _, ids in answers]))
        prompts = [example["prompt"]] * len(answers)
        per_fn = reward_functions.each(self.functions, prompts, completions, **columns)
        total = reward_functions.weighted(self.functions, self.weights)(prompts, completions, **columns)
        question = example["prompt"][-1]["content"]
        for i, (text, finish, _) in enumerate(answers):
            scores = {fn.__name__: values[i] for fn, values in zip(self.functions, per_fn)}
            if self.jsonl:
                self.out.write(progress.line("sample", keys=False, prompt=question, answer=text,
                                             finish=finish, rewards=scores, reward=total[i]) + "\n")
                continue
            if i == 0:
                self.out.write(f"\n### {question}\n")
            shown = ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} -" for k, v in scores.items())
            self.out.write(f"[reward {total[i]:.3f}{' = ' + shown if len(scores) > 1 else ''}]"
                           f"{'' if finish == 'stop' else ' (cut at the token limit)'} {text!r}\n")
        return total


# GRPO's settings: the flags of the kinds that train with it (grpo, skill).
OPTIONS = (
    kinds.NO_DRIFT,
    kinds.Option("beta", "weight of the KL pull to the base (default 0: none)",
                 kinds.non_negative, label="KL weight (beta)"),
    kinds.Option("task", "a built-in task: its prompts, and its reward when no other is given "
                 "(default: length)", choices=tuple(tasks.TASKS)),
    kinds.Option("reward_fn", "your reward function (TRL's signature: (prompts, completions, "
                 "**columns) -> list of floats); repeatable", action="append",
                 metavar="FILE.py:NAME", label="Reward function", widget="file"),
    kinds.Option("reward_timeout", "seconds each call of a --reward-fn may take, for a "
                 "group of answers, before the job stops (default: 60)", kinds.positive(float),
                 metavar="S"),
    kinds.Option("reward_weight", "the weight of each reward, in the order given (default 1 each)",
                 kinds.finite, action="append", metavar="W"),
    kinds.Option("judge", "a reward: P(yes) of a local model asked whether the answer meets RUBRIC",
                 metavar="RUBRIC", label="Judge rubric"),
    kinds.Option("judge_model", "the judge's model (default: the base)", metavar="GGUF"),
    kinds.Option("reward_model", "a reward adapter from 'diptych train reward' as a reward",
                 metavar="NAME", label="Reward model", widget="adapter", adapter_kind="reward"),
    kinds.Option("reward_rank", "with --reward-model: reward each answer by its rank among "
                 "its group's answers (0 to 1), not by the model's score", action="store_true",
                 label="Rank within the group"),
    kinds.Option("prompts_from", "the task's prompts, your chat history, or a file (text: one "
                 "prompt a line; .jsonl: a 'prompt' per line, and any columns your reward wants)",
                 metavar="task|history|FILE"),
    kinds.Option("max_prompts", "training prompts", kinds.positive(int)),
    kinds.Option("num_generations", "answers per prompt", kinds.positive(int)),
    kinds.Option("max_completion_length", "tokens per sampled answer", kinds.positive(int)),
    kinds.Option("temperature", "sampling temperature", kinds.positive(float)),
    kinds.Option("scale_rewards", "divide each answer's advantage by the spread of rewards in "
                 "its group (TRL's default), in the whole batch, or not at all (none: a group "
                 "whose answers differ by a hair then moves the model by a hair)",
                 choices=SCALES),
    kinds.Option("loss_type", "how a step sums its token losses: over all the answers' tokens "
                 "(dapo), per answer then averaged (grpo), over a constant (dr_grpo), or over "
                 "one process's tokens (bnpo)", choices=LOSSES),
    kinds.Option("lr_ramp", "the share of the steps over which the learning rate ramps up "
                 "from 0 (a fresh optimizer's first steps are full-size in every direction)",
                 kinds.fraction),
    kinds.Option("eval_every", "steps between the held-out evaluations shown while training",
                 kinds.positive(int)),
    kinds.Option("sampler", "who samples the answers (auto: llama.cpp on the CPU, "
                 "transformers on CUDA)", choices=SAMPLERS),
)
