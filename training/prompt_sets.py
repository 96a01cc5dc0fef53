"""Where a set of prompts comes from: a file, a built-in task, the chat history, or the
held-out prompts.

GRPO and the skill job read their prompts files here (``reinforce.py``), and the vote
queue (the app's Queue tab, ``diptych data queue``) its prompt sets. A file is one prompt
a line, or JSON lines (``.jsonl``) each with a ``prompt``: a string or a list of messages,
and any other columns (a reward may want them). A file that cannot be read whole is
refused with one line naming the line at fault, and nothing is made of it.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from diptych.models import drift
from diptych.models.errors import UserError
from diptych.models.session import StoreWriteError

from . import tasks
from .store import Store, well_formed_prompt

SOURCES_HELP = ("a file (one prompt a line, or .jsonl with a 'prompt' on each line), "
                f"task:NAME ({', '.join(tasks.TASKS)}), history (your chat prompts, newest "
                "first) or held-out (the prompts drift is measured on)")


class PromptSetError(UserError):
    """A prompt set that cannot be read: says which file, line or name, and why."""


@dataclass(frozen=True)
class PromptSet:
    source: str  # what a queue stores: task:NAME, history, held-out, or the file's full path
    title: str  # what a list of queues shows
    prompts: list[list[dict]]  # message lists, each ending with the user's


def read_file(path: Path) -> list[dict]:
    """A prompts file's rows, each with its ``prompt`` as a message list (JSON lines keep
    their other columns); PromptSetError, naming the line, for one that is not."""
    if not path.is_file():
        raise PromptSetError(f"{path}: no such prompt file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptSetError(f"{path}: not UTF-8 text (byte {exc.start:,}): give one prompt a "
                             "line, or JSON lines") from None
    except OSError as exc:
        raise PromptSetError(f"{path}: {exc.strerror}") from None
    if path.suffix != ".jsonl":
        return [{"prompt": _messages(line.strip())} for line in text.splitlines() if line.strip()]
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise PromptSetError(f"{path}:{number}: not JSON: {exc}") from None
        row = row if isinstance(row, dict) else {"prompt": row}
        prompt = row.get("prompt")
        if not (isinstance(prompt, str) and prompt.strip()) and not _is_conversation(prompt):
            raise PromptSetError(f"{path}:{number}: 'prompt' must be a string or a list of messages")
        examples.append({**row, "prompt": _messages(prompt)})
    columns = {tuple(sorted(e)) for e in examples}
    if len(columns) > 1:
        raise PromptSetError(f"{path}: every line needs the same keys (found {len(columns)} "
                             "different sets)")
    return examples


def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _is_conversation(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt)


def load(source: str, count: int, store: Store | None = None, seed: int = 0) -> PromptSet:
    """Up to ``count`` prompts of ``source`` (see ``SOURCES_HELP``): a task's drawn with
    ``seed``, the history's newest first (from ``store``), a file's and the held-out
    prompts' first. Every prompt must be one a model can answer: a list of messages
    ending with a user's that says something."""
    if source.startswith("task:"):
        name = source.removeprefix("task:")
        if name not in tasks.TASKS:
            raise PromptSetError(f"unknown task {name!r}; choose one of {', '.join(tasks.TASKS)}")
        found = PromptSet(source, f"Task: {name}", [e["prompt"] for e in
                                                     tasks.TASKS[name].examples(count, random.Random(seed))])
    elif source == "history":
        found = PromptSet(source, "Chat history", store.recent_prompts(count) if store else [])
    elif source == "held-out":
        found = PromptSet(source, "Held-out prompts", drift.held_out_prompts()[:count])
    else:
        path = Path(source).expanduser()
        found = PromptSet(str(path.resolve()), path.name,
                          [row["prompt"] for row in read_file(path)[:count]])
    if not found.prompts:
        raise PromptSetError(f"no prompts in {found.source}")
    for number, prompt in enumerate(found.prompts, 1):
        if not well_formed_prompt(prompt) or not all(
                m["content"].strip() for m in prompt if m["role"] == "user"):
            raise PromptSetError(f"{found.source}: prompt {number} is not a conversation that "
                                 "ends with something the user says")
    return found


def enqueue(store: Store, prompt_set: PromptSet) -> int:
    """Queue ``prompt_set`` for voting in ``store``, all or nothing; the queue's id."""
    try:
        return store.new_queue(prompt_set.source, prompt_set.title, prompt_set.prompts)
    except (sqlite3.Error, OSError) as exc:
        raise StoreWriteError(f"the database did not take the queue ({exc})") from exc
