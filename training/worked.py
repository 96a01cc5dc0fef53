"""Worked examples: prompts with their answers written out, for a supervised warm-up.

GRPO can only reinforce what the model already samples now and then; a skill the base
never shows (reversing letters, getting a sum right, ending its answer) first has to be
shown. A worked-examples file holds JSON lines, one example each:

    {"prompt": "Reverse this sentence character by character:\\nThe cat sat.", "completion": ".tas tac ehT"}

``prompt`` and ``completion`` are each a string or a list of ``{"role", "content"}``
messages (TRL's conversational prompt-completion format); any other keys (a ``target``
the reward compares with) are kept, so a dry run can score the worked answers with the
job's reward. Every line needs the same keys. A file is checked whole: a bad line is one
error naming the file and line, and nothing trains.
"""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

from .errors import JobError

MAX_LINE = 1 << 20  # characters: a worked example is a few sentences, not a book


def messages(value, role: str) -> list[dict] | None:
    """A string or a message list as a message list; None when it is neither (or empty)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else None
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value):
        return value
    return None


def read(path: Path) -> list[dict]:
    """The examples of a worked-examples file, each with message-list ``prompt`` and
    ``completion``; JobError naming the file (and line) when it is not one."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        raise JobError(f"{path}: no such worked-examples file") from None
    if not stat.S_ISREG(mode):
        raise JobError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise JobError(f"{path}: not a UTF-8 text file of JSON lines") from None
    except OSError as exc:
        raise JobError(f"{path}: cannot read it: {exc.strerror}") from None
    examples, keys = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if len(line) > MAX_LINE:
            raise JobError(f"{where}: a line of {len(line):,} characters (at most {MAX_LINE:,})")
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise JobError(f"{where}: not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise JobError(f"{where}: a line must be a JSON object with 'prompt' and 'completion'")
        prompt, completion = messages(row.get("prompt"), "user"), messages(row.get("completion"), "assistant")
        if prompt is None:
            raise JobError(f"{where}: 'prompt' must be a non-empty string or a list of messages")
        if completion is None:
            raise JobError(f"{where}: 'completion' must be a non-empty string or a list of messages")
        if keys is None:
            keys = set(row)
        elif set(row) != keys:
            raise JobError(f"{where}: every line needs the same keys ({', '.join(sorted(keys))})")
        examples.append({**row, "prompt": prompt, "completion": completion})
    if not examples:
        raise JobError(f"{path}: no worked examples in it")
    return examples


def checked(text: str) -> str:
    """An argparse type: a worked-examples file that reads whole, so a bad one is refused
    before a job loads anything."""
    try:
        read(Path(text).expanduser())
    except JobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def key(example: dict) -> str:
    """What identifies an example's prompt (to keep held-out prompts out of the warm-up)."""
    return json.dumps(example["prompt"], sort_keys=True, ensure_ascii=False)
