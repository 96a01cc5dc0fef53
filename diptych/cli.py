"""The ``diptych`` command: launches the app, or runs a subcommand headless.

Each subcommand lives in ``diptych.commands.<name>`` and registers itself with
``register(subparsers)``; its handler takes the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from . import __version__
from .models.errors import EXIT_STATUS, UserError, error_line

SUBCOMMANDS = ("chat", "data", "train", "adapters", "score")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the one format of every error (subcommands too), that
    keeps its subcommands (``subcommands``: the action ``add_subparsers`` returned, or None).
    argparse makes every subcommand's parser of its parent's class, so they keep theirs."""

    subcommands = None

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def error(self, message: str):
        self.exit(2, error_line(f"{message} (see '{self.prog} --help')") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    _accept_after_subcommand(parser)
    return parser


# The subcommands that take --model / --adapter after their name too ("diptych chat
# --model X"); "*": every action of that command.
TAKES_MODEL = {("chat",), ("score",), ("train", "*"), ("adapters", "drift"),
               ("adapters", "export-gguf"), ("data", "queue")}
TAKES_ADAPTER = {("chat",), ("score",), ("data", "queue")}


def _leaves(parser: _Parser, path: tuple = ()):
    """(command path, parser) of each runnable subcommand."""
    if parser.subcommands is None:
        yield path, parser
        return
    for name, sub in parser.subcommands.choices.items():
        yield from _leaves(sub, path + (name,))


def _accept_after_subcommand(parser: argparse.ArgumentParser) -> None:
    """Give the subcommands that use them --model and --adapter of their own. SUPPRESS:
    when not given after the subcommand, the value given before it stays."""
    for path, sub in _leaves(parser):
        wanted = {path[:1] + ("*",), path}
        for option, takers, text in (
                ("--model", TAKES_MODEL, "a local GGUF file (default: the bundled Gemma 3 270M)"),
                ("--adapter", TAKES_ADAPTER, "the tuned model's LoRA: a registered name, "
                 "a folder or a .gguf file")):
            if wanted & takers:
                try:
                    sub.add_argument(option, default=argparse.SUPPRESS, help=text)
                except argparse.ArgumentError:  # the subcommand has its own already
                    pass


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        except UserError as exc:  # the user can fix it: one line, no traceback
            print(error_line(exc), file=sys.stderr)
            return EXIT_STATUS
        except BrokenPipeError:
            raise  # handled below: the reader of our output went away
        except Exception:  # anything else is ours to fix
            traceback.print_exc()
            print(f"diptych {__version__}: this is a bug in Diptych, not something you did; "
                  "please report it with the traceback above.", file=sys.stderr)
            return 1
        finally:  # --help and --version exit from here too
            sys.stdout.flush()  # here, not at exit, where a closed pipe cannot be handled
    except BrokenPipeError:
        # The reader of our output went away (``diptych ... | head``): stop quietly, as
        # other commands in a pipeline do, and send what is still buffered nowhere.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout with no file (tests)
            pass
        return 1


def _main(argv: list[str] | None) -> int:
    # Before any command imports transformers or TRL: no model hub, no telemetry.
    from diptych.training import stay_offline

    stay_offline()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if args.adapter and (problem := _unrunnable_adapter(args)):
            print(error_line(problem), file=sys.stderr)
            return EXIT_STATUS
        from diptych.desktop.app import run_app

        return run_app(args)
    return args.handler(args)


def _unrunnable_adapter(args) -> str | None:
    """Why ``--adapter`` names a folder llama.cpp cannot run (a reward model, a folder with
    no GGUF LoRA), so the app does not show the plain base as the tuned model; else None.
    A name that resolves to nothing is left to the app, which says so and opens without."""
    from diptych.models import adapters

    try:
        info = adapters.resolve(args.adapter, args.data_dir)
    except (adapters.AdapterError, OSError):
        return None
    try:
        adapters.runnable_gguf(info)
    except adapters.AdapterError as exc:
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
