"""``diptych train KIND``: train a LoRA adapter and register it under ``--name``.

- ``dpo``: on the votes in the store (or ``--data FILE.jsonl``), make the chosen answers
  likelier; the tuned pane can load the result at once.
- ``kto``: on every vote as a label (desirable or not), paired or not.
- ``sft``: imitate the answers you wrote (and, with ``--chosen``, the ones you chose).
- ``reward``: a reward model (a scoring head + LoRA) on the same pairs, for ``grpo
  --reward-model NAME``.
- ``grpo``: sample answers, score them (a task, your own ``--reward-fn FILE.py:NAME``, a
  rubric ``--judge``, or ``--reward-model NAME``), and reinforce the better ones, with a
  KL pull (``--beta``, default none) back to the base. ``--dry-run`` shows a few scored
  answers and trains nothing.
- ``skill``: teach what the base never samples: a warm-up on worked examples (``--examples
  FILE.jsonl``, or the task's own), then GRPO on the reward, as one job and one adapter.

Every kind can start ``--from ADAPTER``. The flags come from each kind's description
(``diptych.training.kinds``). The model is the top-level ``--model`` (default: the
bundled one) and the adapter goes to ``adapters/<name>/`` in the top-level
``--data-dir``. The desktop app runs this very command with ``--progress jsonl`` and
draws the lines; see ``diptych.training.job``. Unset options take each kind's defaults
(its ``Config``).
"""

from __future__ import annotations

import sys

from diptych.errors import EXIT_STATUS
from diptych.training import kinds as job_kinds


def register(subparsers) -> None:
    described = job_kinds.kinds()
    parser = subparsers.add_parser("train", help=f"train a LoRA adapter ({', '.join(described)})")
    subs = parser.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    for name, kind in described.items():
        sub = subs.add_parser(name, help=kind.help, description=kind.help)
        job_kinds.add_arguments(sub, kind)
        sub.set_defaults(handler=lambda args, kind=kind: run(kind, args))


def run(kind: job_kinds.Kind, args) -> int:
    from diptych.models.errors import UserError, error_line
    from diptych.training import job, progress

    cfg = job_kinds.config_from(kind, vars(args))
    if getattr(cfg, "dry_run", False) and kind.dry_run is not None:
        try:
            return kind.dry_run(cfg)
        except UserError as exc:  # a bad reward file, prompts file or model
            if cfg.progress == "jsonl":  # the app reads errors from stdout too
                print(progress.line("error", keys=False, error=str(exc)), flush=True)
            print(error_line(exc), file=sys.stderr)
            return EXIT_STATUS
    if not cfg.name:
        print(error_line("--name is required"), file=sys.stderr)
        return EXIT_STATUS
    return job.run(kind.name, cfg, kind.train, writes_gguf=kind.writes_gguf)
