"""``diptych train dpo|reward|grpo``: train a LoRA adapter and register it under ``--name``.

- ``dpo``: on the votes in the store (or ``--data FILE.jsonl``), make the chosen answers
  likelier; the tuned pane can load the result at once.
- ``reward``: a reward model (a scoring head + LoRA) on the same pairs, for ``grpo
  --reward-model NAME``.
- ``grpo``: sample answers, score them (a task, your own ``--reward-fn FILE.py:NAME``, a
  rubric ``--judge``, or ``--reward-model NAME``), and reinforce the better ones, with a
  KL pull (``--beta``) back to the base. ``--dry-run`` shows a few scored answers and
  trains nothing.

The model is the top-level ``--model`` (default: the bundled one) and the adapter goes
to ``adapters/<name>/`` in the top-level ``--data-dir``. The desktop app runs this very
command with ``--progress jsonl`` and draws the lines; see ``diptych.training.job``.
Unset options take each trainer's defaults (its ``Config``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from dataclasses import fields

from diptych.commands import seed
from diptych.training.tasks import TASKS

KINDS = {
    "dpo": "DPO on preference pairs: a LoRA for the tuned pane",
    "reward": "a reward model on preference pairs, for grpo --reward-model",
    "grpo": "GRPO against your reward functions, a rubric judge, a task's reward or a reward model",
}


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _add_common(parser) -> None:
    parser.add_argument("--name", help="the new adapter's name (a folder name; required unless --dry-run)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive(int), help="optimizer steps")
    length.add_argument("--epochs", type=_positive(float), help="passes over the data")
    parser.add_argument("--lr", type=_positive(float), help="learning rate")
    parser.add_argument("--lora-r", type=_positive(int), help="LoRA rank")
    parser.add_argument("--batch-size", type=_positive(int), help="examples per step")
    parser.add_argument("--eval-size", type=_positive(int),
                        help="held-out examples for the before/after evaluation")
    parser.add_argument("--seed", type=seed)
    parser.add_argument("--progress", choices=["jsonl"],
                        help="machine-readable progress: one JSON object per line on stdout")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a LoRA adapter (dpo, reward, grpo)")
    kinds = parser.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    for kind, text in KINDS.items():
        sub = kinds.add_parser(kind, help=text, description=text)
        _add_common(sub)
        if kind in ("dpo", "reward"):
            sub.add_argument("--data", metavar="FILE.jsonl",
                             help="preference pairs (default: the votes in the store)")
            sub.add_argument("--max-length", type=_positive(int), help="tokens of prompt + answer")
        if kind in ("dpo", "grpo"):
            sub.add_argument("--no-drift", dest="drift", action="store_false", default=None,
                             help="skip measuring the new adapter's KL from the base "
                                  "(about 20 s; 'diptych adapters drift' measures it later)")
            sub.add_argument("--beta", type=_positive(float), help="weight of the KL pull to the base")
        if kind == "grpo":
            sub.add_argument("--task", choices=list(TASKS),
                             help="a built-in task: its prompts, and its reward when no other is given "
                                  "(default: length)")
            sub.add_argument("--reward-fn", action="append", metavar="FILE.py:NAME",
                             help="your reward function (TRL's signature: (prompts, completions, "
                                  "**columns) -> list of floats); repeatable")
            sub.add_argument("--reward-weight", action="append", type=_finite, metavar="W",
                             help="the weight of each reward, in the order given (default 1 each)")
            sub.add_argument("--judge", metavar="RUBRIC",
                             help="a reward: P(yes) of a local model asked whether the answer meets RUBRIC")
            sub.add_argument("--judge-model", metavar="GGUF", help="the judge's model (default: the base)")
            sub.add_argument("--reward-model", metavar="NAME",
                             help="a reward adapter from 'diptych train reward' as a reward")
            sub.add_argument("--prompts-from", metavar="task|history|FILE",
                             help="the task's prompts, your chat history, or a file "
                                  "(text: one prompt a line; .jsonl: a 'prompt' per line, "
                                  "and any columns your reward wants)")
            sub.add_argument("--max-prompts", type=_positive(int), help="training prompts")
            sub.add_argument("--num-generations", type=_positive(int), help="answers per prompt")
            sub.add_argument("--max-completion-length", type=_positive(int),
                             help="tokens per sampled answer")
            sub.add_argument("--temperature", type=_positive(float), help="sampling temperature")
            sub.add_argument("--eval-every", type=_positive(int),
                             help="steps between the held-out evaluations shown while training")
            sub.add_argument("--sampler", choices=["auto", "llama.cpp", "transformers"],
                             help="who samples the answers (auto: llama.cpp on the CPU, "
                                  "transformers on CUDA)")
            sub.add_argument("--dry-run", action="store_true", default=None,
                             help="sample and score a few answers with the model as it is; train nothing")
        sub.set_defaults(handler=lambda args, kind=kind: run(kind, args))


def run(kind: str, args) -> int:
    # Imported here: building the parser must not import the trainers.
    from diptych.training import job

    module = importlib.import_module(f"diptych.training.{kind}")
    given = {f.name: getattr(args, f.name) for f in fields(module.Config)
             if getattr(args, f.name, None) is not None}
    if "epochs" in given:  # a trainer's default step count must not override --epochs
        given["steps"] = None
    cfg = module.Config(**given)
    if getattr(cfg, "dry_run", False):
        try:
            return module.dry_run(cfg)
        except job.usage_errors() as exc:
            if cfg.progress == "jsonl":  # the app reads errors from stdout too
                print(json.dumps({"phase": "error", "error": str(exc)}), flush=True)
            print(f"diptych train: error: {exc}", file=sys.stderr)
            return job.EXIT_USAGE
    if not cfg.name:
        print(f"diptych train {kind}: error: --name is required", file=sys.stderr)
        return job.EXIT_USAGE
    return job.run(kind, cfg, module.train)
