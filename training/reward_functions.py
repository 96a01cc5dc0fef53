"""The rewards a GRPO job maximises, whatever their source, as TRL reward functions.

A reward function has TRL's signature, ``fn(prompts, completions, **columns) -> list``:
``prompts`` and ``completions`` are conversational (lists of ``{"role", "content"}``
messages; the answer is ``completion[-1]["content"]``), and ``columns`` holds the
dataset's extra columns (a task's ``target``, a prompt file's JSONL keys) as lists, plus
what TRL adds (``trainer_state``, ``log_extra``, ``log_metric``): accept ``**kwargs``.
It returns one float per completion (``None`` where it does not apply).

Sources, combined by TRL with ``reward_weights``:

- a built-in task (``tasks.py``);
- ``--reward-fn FILE.py:NAME``: the user's own function, loaded from their file and run in
  a process of its own (``reward_process.load_function``). It is the user's code, so everything it
  does wrong is reported as one line naming the file (and line): a file that does not
  import, a missing name, a function that raises (``SystemExit`` too), returns the wrong
  number of rewards or something that is not a number, ends or crashes its process, or
  takes longer than the time limit;
- ``--judge RUBRIC``: P(yes) of a local GGUF asked whether the answer meets the rubric
  (:mod:`diptych.models.judge`);
- ``--reward-model NAME``: a reward model trained on the votes (``reward.py`` trains it;
  :func:`load_reward_model` and :func:`as_reward_function` make it a reward).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Callable

from .errors import JobError


def split_spec(spec: str) -> tuple[str, str]:
    """``FILE.py:NAME`` -> (``FILE.py``, ``NAME``), split at the last colon (a path may hold
    one); ``("", spec)`` without a colon. Also a reward's label (``task:length``)."""
    file, _, name = spec.rpartition(":")
    return file, name


def load_in_process(path: Path, file: str, name: str) -> Callable:
    """The function ``name`` of the reward file at ``path``, imported here and checked on
    every call (what the reward's own process runs)."""
    module_name = f"diptych_reward_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise JobError(f"{file}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise JobError(f"{file}:{exc.lineno}: the reward file does not parse: {exc.msg}") from None
    except BaseException as exc:  # noqa: BLE001 - the user's code (sys.exit included)
        raise JobError(f"{where(exc, path, file)}: the reward file failed to import: "
                       f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise JobError(f"{file}: has no function named {name!r}")
    if not callable(fn):
        raise JobError(f"{file}: {name} is not a function")
    return checked(fn, f"{file}:{name}", path)


def checked(fn: Callable, label: str, path: Path | None = None) -> Callable:
    """``fn`` with its failures and its results checked: one line naming ``label`` on error."""

    def reward(prompts, completions, **columns):
        try:
            values = fn(prompts=prompts, completions=completions, **columns)
        except BaseException as exc:  # noqa: BLE001 - the user's code (sys.exit, Ctrl+C too)
            if isinstance(exc, JobError) or (path is None and not isinstance(exc, Exception)):
                raise  # not the user's code: the project's own reward, stopped by a signal
            at = f"{where(exc, path, split_spec(label)[0])} ({fn.__name__})" if path else label
            raise JobError(f"{at}: the reward raised {type(exc).__name__}: {exc}") from None
        try:
            values = list(values)
        except TypeError:
            raise JobError(f"{label}: the reward must return a list of numbers, "
                           f"not {type(values).__name__}") from None
        if len(values) != len(completions):
            raise JobError(f"{label}: the reward returned {len(values)} values for "
                           f"{len(completions)} answers")
        out = []
        for i, value in enumerate(values):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not _finite(value)):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
                raise JobError(f"{label}: the reward for answer {i + 1} is {shown}, "
                               "not a finite number (or None)")
            out.append(None if value is None else float(value))
        return out

    reward.__name__ = split_spec(label)[1] or label  # TRL logs each reward by this name
    return reward


def _finite(value: int | float) -> bool:
    try:  # an int too large for a float (10**400) is no reward either
        return math.isfinite(value)
    except OverflowError:
        return False


def where(exc: BaseException, path: Path, file: str) -> str:
    """``file``, with the line of it where ``exc`` was raised when it was raised there."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if Path(frame.filename).resolve() == path]
    return f"{file}:{lines[-1]}" if lines else file


def judge(rubric: str, model_path: str | None) -> Callable:
    """A reward from a rubric judge on a local GGUF (the base when ``model_path`` is None)."""
    from diptych.models import catalog
    from diptych.models.judge import Judge

    path = Path(model_path).expanduser() if model_path else catalog.bundled_model_path()
    the_judge = Judge(path, rubric)

    def reward(prompts, completions, **_):
        return [the_judge.score(p, c[-1]["content"] if isinstance(c, list) else c)
                for p, c in zip(prompts, completions)]

    reward.__name__ = "judge"
    return reward


def weighted(functions: list[Callable], weights: list[float]) -> Callable:
    """One reward: the weighted sum of ``functions``, as TRL combines them (``None`` skipped)."""

    def reward(prompts, completions, **columns):
        return [sum(w * v for w, v in zip(weights, values) if v is not None)
                for values in zip(*each(functions, prompts, completions, **columns))]

    return reward


def each(functions: list[Callable], prompts, completions, **columns) -> list[list[float | None]]:
    """Every function's rewards for ``completions``: one list per function."""
    return [fn(prompts=prompts, completions=completions, **columns) for fn in functions]


def outside_training(completion_ids: list[list[int]]) -> dict:
    """The keyword arguments TRL adds for a reward while training, as they stand outside it
    (evaluations, dry runs): the answers' token ids, no trainer state, logging that drops."""
    return {"completion_ids": completion_ids, "trainer_state": None,
            "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}


def load_reward_model(name_or_path: str, base_gguf, data_dir=None, device=None):
    """(model, tokenizer) of a trained reward adapter on ``base_gguf``, merged, for scoring."""
    from peft import PeftModel

    from diptych.models import adapters, catalog

    from .base_weights import load_base

    info = adapters.resolve(name_or_path, data_dir)
    if info.kind != "reward":
        raise JobError(f"{info.name} is a {info.kind} adapter, not a reward model "
                       "(make one with 'diptych train reward')")
    if info.base_hash and info.base_hash != catalog.file_hash(base_gguf):
        raise JobError(f"reward model {info.name} was trained on another base model "
                       f"({info.meta.get('base', {}).get('name', 'unknown')})")
    model, tokenizer = load_base(base_gguf, reward_head=True)
    model = PeftModel.from_pretrained(model, info.path).merge_and_unload().eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def as_reward_function(model, tokenizer, rank: bool = False):
    """A reward model as a TRL reward function: the score of prompt + completion, or with
    ``rank`` each answer's rank among the answers to the same prompt (0 the lowest, 1 the
    highest): only the order the model puts a group in counts, not how far apart its scores
    are, so one answer it scores wildly does not drown the others' differences."""
    import torch

    from . import turns

    def reward_model(prompts, completions, completion_ids=None, **_) -> list[float]:
        # An answer cut at the token limit is scored without the end-of-turn tokens, as the
        # model was trained on cut answers: rendered whole it would look ended by itself.
        # No token ids (an answer not sampled here, as a dry run's chosen ones): taken as ended.
        ended = [not ids or turns.ended_by_itself(tokenizer, ids)
                 for ids in (completion_ids or [None] * len(prompts))]
        ids = [turns.as_scored(tokenizer, p + c, e) for p, c, e in zip(prompts, completions, ended)]
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        with torch.no_grad():
            scores = model(**batch.to(model.device)).logits[:, 0].float().tolist()
        return ranks_within_groups(prompts, scores) if rank else scores

    return reward_model


def ranks_within_groups(prompts: list, scores: list[float]) -> list[float]:
    """Each score's rank among the scores of the same prompt, scaled to 0..1 (ties share
    their mean rank; a prompt answered once gets 0.5)."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(json.dumps(prompt, sort_keys=True), []).append(i)
    out = [0.5] * len(scores)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            below = sum(scores[j] < scores[i] for j in members)
            ties = sum(scores[j] == scores[i] for j in members) - 1
            out[i] = (below + ties / 2) / (len(members) - 1)
    return out
