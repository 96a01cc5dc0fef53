"""The README's commands work as printed.

- Its two set-up commands are the ones CI runs (``.ci/run``).
- Every other command line in a ``bash`` block runs, in order, in one process (through
  ``diptych``'s entry point) and one data folder that holds a few votes, on the bundled model, with tiny sizes appended (a later value of an
  option wins in argparse, so the printed command is what runs, only smaller), in a
  user's environment, and none of them contacts any host.
- Every option the CLI synopsis and the prose show exists on the command they show it on,
  commands for several GPUs included; the benchmarks it names start.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import OFFLINE, users_environment

from diptych.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Appended to a command to keep it small; each kind takes its own flags.
TINY = {
    ("train", "dpo"): ["--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1", "--no-drift"],
    ("train", "kto"): ["--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1", "--no-drift"],
    ("train", "sft"): ["--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1", "--no-drift"],
    ("train", "reward"): ["--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1"],
    ("train", "grpo"): ["--steps", "1", "--num-generations", "2", "--max-completion-length", "4",
                        "--eval-size", "2", "--no-drift"],
    ("train", "skill"): ["--steps", "1", "--warmup-steps", "1", "--warmup-examples", "2",
                         "--warmup-batch-size", "2", "--num-generations", "2", "--max-prompts", "2",
                         "--max-completion-length", "4", "--eval-size", "1", "--no-drift"],
    ("train", "rlhf"): ["--warmup-steps", "1", "--steps", "1", "--batch-size", "2",
                        "--num-generations", "2", "--max-completion-length", "4", "--max-length", "48",
                        "--eval-every", "1", "--no-drift"],
    ("chat",): ["--max-tokens", "4"],
    ("data", "queue"): ["--count", "2", "--max-tokens", "4"],
    ("adapters", "drift"): ["--max-tokens", "4"],
}


def blocks(language: str) -> list[list[str]]:
    """The lines of each fenced block of ``language`` ('' for a bare fence), with
    backslash continuations joined."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.S | re.M):
        if match.group(1) == language:
            found.append(match.group(2).replace("\\\n", " ").splitlines())
    return found


SETUP, TESTS, *WALKTHROUGH = blocks("bash")
COMMANDS = [line.strip() for block in WALKTHROUGH for line in block
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_set_up_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace("python -m pip ", "pip ")
    install, launch = SETUP[0].split(" && ")
    assert (len(SETUP), len(TESTS), launch) == (1, 1, "diptych")
    assert install in ci.splitlines()
    assert TESTS[0] in ci.splitlines()


def _command_path(words: list[str], parser: argparse.ArgumentParser) -> tuple[tuple, argparse.ArgumentParser]:
    """The subcommand words at the start of ``words`` and the parser that takes the rest."""
    path = []
    for word in words:
        if parser.subcommands is None or word not in parser.subcommands.choices:
            break
        parser = parser.subcommands.choices[word]
        path.append(word)
    return tuple(path), parser


def _tiny(argv: list[str]) -> list[str]:
    path, _ = _command_path(argv, build_parser())
    extra = TINY.get(path, [])
    if path in (("train", "grpo"), ("train", "skill")) and "--dry-run" in argv:
        extra = ["--num-generations", "2", "--max-completion-length", "8"]
    if path == ("train", "rlhf") and "--dry-run" in argv:
        extra = ["--num-generations", "2", "--max-completion-length", "8", "--max-length", "48"]
    return argv + extra


@pytest.mark.skipif(not COMMANDS, reason="the README shows no commands beyond set-up")
def test_every_command_runs_as_printed_and_offline(voted, tmp_path):
    """In a user's environment (no hub variables set), and no command looks up or
    connects to any host (TRL's trainers send telemetry unless told not to)."""
    network = tmp_path / "network.log"
    network.write_text("")
    env = users_environment() | {"DIPTYCH_HOME": str(voted)}
    commands = [shlex.split(line) for line in COMMANDS]
    unknown = [" ".join(words) for words in commands if words[0] != "diptych"]
    assert not unknown, f"the README shows commands this test does not know how to run: {unknown}"
    # In order, in one process: a shell would start one for each, but the imports are what
    # that costs, not what is tested.
    argv = [sys.executable, "-c", OFFLINE, str(network), json.dumps([_tiny(w[1:]) for w in commands])]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    ran = [line for line in result.stderr.splitlines() if line.startswith("$ diptych ")]
    assert result.returncode == 0 and len(ran) == len(commands), \
        f"{ran[-1:]} failed:\n{result.stderr[-3000:]}"
    assert network.read_text() == ""
    # Issue 22, item 8: a job says what it does in a person's words, and nothing else
    # (no progress bars, metric dicts or library warnings)
    if any(words[1:2] == ["train"] for words in commands):
        assert "Evaluating the base…" in result.stderr and "Done: the adapter is in" in result.stderr
        assert re.search(r"^step 1/\d+  loss \S+", result.stderr, re.M), result.stderr[-3000:]
        noise = [line for line in result.stderr.splitlines()
                 if "{'" in line or "%|" in line or "Warning" in line or line.startswith("[")]
        assert not noise, noise[:5]


def _options_on(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _synopsis_lines() -> list[str]:
    lines = []
    for block in blocks(""):
        for line in block:
            if line.startswith("diptych"):
                lines.append(line)
            elif line.startswith(" ") and lines:
                lines[-1] += " " + line.strip()
    # Commands for machines this suite cannot run on (several GPUs): their options at least.
    for block in blocks("text"):
        lines += ["diptych " + line.split(" -m diptych ", 1)[1] for line in block if " -m diptych " in line]
    inline = re.findall(r"`(diptych [a-z][^`]*)`", README)
    return lines + [text for text in inline if not text.startswith("diptych.")]


SCRIPTS = sorted(set(re.findall(r"`python (bench/\w+\.py)[^`]*`", README)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmarks_the_readme_names_exist_and_start(script):
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout, result.stderr[-2000:]


def _parsers_for(words: list[str], parser: argparse.ArgumentParser) -> tuple[str, list]:
    """The command a synopsis part names and the parsers its options may belong to:
    ``train {dpo,reward,grpo} --name`` may use any of the three kinds' options."""
    path, sub = _command_path(words, parser)
    rest = words[len(path):]
    if rest and re.fullmatch(r"\{[\w,-]+\}", rest[0]):
        return " ".join(path), [sub.subcommands.choices[name] for name in rest[0][1:-1].split(",")]
    return " ".join(path), [sub] + ([] if path else [parser])


def _alternatives(line: str) -> list[str]:
    """``line`` split at each " | " outside brackets."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(line):
        depth += (char in "[{") - (char in "]}")
        if depth == 0 and line.startswith(" | ", at):
            parts.append(line[start:at])
            start = at + 3
    return parts + [line[start:]]


@pytest.mark.parametrize("line", _synopsis_lines())
def test_the_synopsis_names_only_options_that_exist(line):
    parser = build_parser()
    first, *others = _alternatives(line)  # "adapters list [--json] | export-gguf DIR | ..."
    words = first.split()[1:]
    parts = [words] + [words[:1] + other.split() for other in others]
    for part in parts:
        name, parsers = _parsers_for(part, parser)
        known = set().union(*(_options_on(p) for p in parsers))
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", " ".join(part)):
            assert option in known, f"{line}: 'diptych {name}' has no {option}"


def test_errors_look_as_the_readme_shows(data_dir, capsys):
    from diptych.cli import main

    shown = [line for block in blocks("text") for line in block]
    pairs = [(line[2:], shown[i + 1]) for i, line in enumerate(shown)
             if line.startswith("$ diptych ") and shown[i + 1].startswith("diptych: error: ")]
    assert pairs, "the README shows what an error looks like"
    for command, error in pairs:
        assert main(shlex.split(command)[1:]) == 2, command
        assert capsys.readouterr().err == error + "\n"
