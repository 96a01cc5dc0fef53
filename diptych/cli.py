"""The ``diptych`` command: launches the app, or runs a subcommand headless.

Each subcommand lives in ``diptych.commands.<name>`` and registers itself with
``register(subparsers)``; its handler takes the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

SUBCOMMANDS = ("chat", "data", "train", "adapters", "score")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diptych",
        description="Chat with a base model and its RL-tuned twin side by side; "
        "vote, train a LoRA on your votes, and see where the model moved.",
    )
    parser.add_argument("--version", action="version", version=f"diptych {__version__}")
    parser.add_argument("--data-dir", help="where the database and adapters live "
                        "(default: $DIPTYCH_HOME or the user data directory)")
    parser.add_argument("--model", help="a local GGUF file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--adapter", help="LoRA adapter for the tuned pane: a name or a directory")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"diptych.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"diptych.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from diptych.desktop.app import run_app

        return run_app(args)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
