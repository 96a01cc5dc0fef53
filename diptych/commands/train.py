"""``diptych train dpo|reward|grpo``: train a LoRA adapter and register it under ``--name``.

- ``dpo``: on the votes in the store (or ``--data FILE.jsonl``), make the chosen answers
  likelier; the tuned pane can load the result at once.
- ``reward``: a reward model (a scoring head + LoRA) on the same pairs, for ``grpo
  --reward-model NAME``.
- ``grpo``: sample answers, score them (``--task reverse|arith|length`` or
  ``--reward-model NAME``), and reinforce the better ones, with a KL pull (``--beta``)
  back to the base.

The model is the top-level ``--model`` (default: the bundled one) and the adapter goes
to ``adapters/<name>/`` in the top-level ``--data-dir``. The desktop app runs this very
command with ``--progress jsonl`` and draws the lines; see ``diptych.training.job``.
Unset options take each trainer's defaults (its ``Config``).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import fields

KINDS = {
    "dpo": "DPO on preference pairs: a LoRA for the tuned pane",
    "reward": "a reward model on preference pairs, for grpo --reward-model",
    "grpo": "GRPO against a task's reward or a reward model",
}


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _add_common(parser) -> None:
    parser.add_argument("--name", required=True, help="the new adapter's name (a folder name)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive(int), help="optimizer steps")
    length.add_argument("--epochs", type=_positive(float), help="passes over the data")
    parser.add_argument("--lr", type=_positive(float), help="learning rate")
    parser.add_argument("--lora-r", type=_positive(int), help="LoRA rank")
    parser.add_argument("--batch-size", type=_positive(int), help="examples per step")
    parser.add_argument("--eval-size", type=_positive(int),
                        help="held-out examples for the before/after evaluation")
    parser.add_argument("--seed", type=int)
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
            sub.add_argument("--task", choices=["reverse", "arith", "length"],
                             help="programmatic reward (default: reverse)")
            sub.add_argument("--reward-model", metavar="NAME",
                             help="a reward adapter from 'diptych train reward' as the reward")
            sub.add_argument("--prompts-from", metavar="task|history|FILE",
                             help="the task's prompts, your chat history, or a file "
                                  "(text: one prompt a line; .jsonl: a 'prompt' per line)")
            sub.add_argument("--max-prompts", type=_positive(int), help="training prompts")
            sub.add_argument("--num-generations", type=_positive(int), help="answers per prompt")
            sub.add_argument("--max-completion-length", type=_positive(int),
                             help="tokens per sampled answer")
        sub.set_defaults(handler=lambda args, kind=kind: run(kind, args))


def run(kind: str, args) -> int:
    # Imported here: building the parser must not import the trainers.
    from diptych.training import job

    module = importlib.import_module(f"diptych.training.{kind}")
    given = {f.name: getattr(args, f.name) for f in fields(module.Config)
             if getattr(args, f.name, None) is not None}
    if "epochs" in given:  # a trainer's default step count must not override --epochs
        given["steps"] = None
    return job.run(kind, module.Config(**given), module.train)
