"""Votes as preference data: TRL's conversational preference format, as JSON lines.

Each line is one JSON object. A vote that prefers one answer makes a pair::

    {"prompt": [{"role": "system", ...}, {"role": "user", ...}, ...],
     "chosen": [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}],
     "choice": "left", "blind": true, "created_at": "...", "vote_uid": "...",
     "conversation_uid": "...", "turn": 0, "chosen_meta": {...}, "rejected_meta": {...}}

- ``left`` / ``right``: one pair; ``prompt`` is the exact message list the winning pane
  rendered (system message included).
- ``better`` (the user wrote a better answer): two lines, left then right, each with
  the user's answer as ``chosen`` against one shown answer, whose rendered messages are
  the ``prompt``; ``chosen_meta`` is ``null``.
- ``tie`` / ``both_bad`` are not pairs. They are exported only with
  ``include_ties=True``, as ``{"prompt": ..., "responses": [left, right], "choice":
  "tie" | "both_bad", ..., "responses_meta": [left meta, right meta]}`` with ``prompt``
  the left pane's messages. TRL's preference trainers do not read such lines.

Import also takes bare TRL pairs made elsewhere (only ``prompt``, ``chosen``,
``rejected``): each becomes a 'left' vote between two answers of an unknown model.

A ``*_meta`` object describes one shown response: side, role, model, model_path,
model_sha256, adapter, adapter_path, adapter_scale, template_name, template_source,
params, n_tokens, ttft_s, tokens_per_s, finish_reason, created_at, and ``prompt``:
``null`` when that pane rendered the line's ``prompt``, else its own message list (in
later turns each pane continues from its own earlier answers).

Numbers are standard JSON only: import refuses ``NaN``, ``Infinity`` and ``-Infinity``
(which Python's json module would otherwise read), floats too large to be finite, and
integers outside SQLite's 64 bits, each with its line number, so nothing an export
writes is non-standard JSON. A line nested deeper than Python can parse is refused too.

Ids: no database ids are exported. Each vote and conversation carries a random
``uid`` that import keeps, so export, import into an empty store, and export again
gives the same bytes, and importing a file twice adds its votes once (lines whose
``vote_uid`` the store already holds are skipped). Deleted votes are not exported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import stat
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import IO, Callable, Iterator

from . import staged_import
from .store import CHOICES, ROLES, SIDES, Store, now, usable_vote
from diptych.models.errors import UserError

PAIR_CHOICES = ("left", "right", "better")
MESSAGE_ROLES = ("system", "user", "assistant")
# A meta field's allowed JSON types; None is allowed for all but side, role, created_at.
META_TYPES = {
    "side": str, "role": str, "model": str, "model_path": str, "model_sha256": str,
    "adapter": str, "adapter_path": str, "adapter_scale": (int, float),
    "template_name": str, "template_source": str, "params": dict, "n_tokens": int,
    "ttft_s": (int, float), "tokens_per_s": (int, float), "finish_reason": str,
    "created_at": str, "prompt": list,
}
REQUIRED_META = ("side", "role", "created_at", "params")


class ImportFormatError(UserError, ValueError):
    """A preference file that cannot be imported; says which line and why."""

    def __init__(self, line: int, problem: str):
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


# -- export -------------------------------------------------------------------------

def response_meta(response: dict, prompt: list[dict]) -> dict:
    meta = {key: response[key] for key in META_TYPES if key != "prompt"}
    meta["prompt"] = None if response["prompt_messages"] == prompt else response["prompt_messages"]
    return meta


def assistant_message(text: str) -> dict:
    return {"role": "assistant", "content": text}


def vote_records(vote: dict) -> list[dict]:
    """The lines one vote (a row of ``Store.votes()``) exports to."""
    left, right = vote["left"], vote["right"]
    about = {"choice": vote["choice"], "blind": vote["blind"], "created_at": vote["created_at"],
             "vote_uid": vote["uid"], "conversation_uid": vote["conversation_uid"],
             "turn": vote["turn"]}
    if vote["choice"] in ("left", "right"):
        winner, loser = (left, right) if vote["choice"] == "left" else (right, left)
        prompt = winner["prompt_messages"]
        return [{"prompt": prompt, "chosen": [assistant_message(winner["text"])],
                 "rejected": [assistant_message(loser["text"])], **about,
                 "chosen_meta": response_meta(winner, prompt),
                 "rejected_meta": response_meta(loser, prompt)}]
    if vote["choice"] == "better":
        return [{"prompt": shown["prompt_messages"],
                 "chosen": [assistant_message(vote["better_text"])],
                 "rejected": [assistant_message(shown["text"])], **about, "chosen_meta": None,
                 "rejected_meta": response_meta(shown, shown["prompt_messages"])}
                for shown in (left, right)]
    prompt = left["prompt_messages"]
    return [{"prompt": prompt,
             "responses": [assistant_message(left["text"]), assistant_message(right["text"])],
             **about, "responses_meta": [response_meta(left, prompt), response_meta(right, prompt)]}]


def records(store: Store, adapter: str | None = None, include_ties: bool = False) -> list[dict]:
    """The store's live votes as preference lines, oldest first."""
    wanted = CHOICES if include_ties else PAIR_CHOICES
    return [record for vote in store.votes(adapter=adapter)
            if vote["choice"] in wanted and usable_vote(vote) for record in vote_records(vote)]


class ExportTargetError(UserError, OSError):
    """A path an export will not write to (a folder, a device): says which and why."""


def export_jsonl(store: Store, out: str | Path | IO[str], include_ties: bool = False) -> int:
    """Write the preference lines to a path or an open text file; returns how many.

    A path is written whole or not at all: into a temporary file in the same folder,
    then renamed over the target, so a reader (or a crash) never sees half a file. A
    path that exists and is not a regular file is refused with ExportTargetError.
    """
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records(store, include_ties=include_ties)]
    if hasattr(out, "write"):
        out.writelines(lines)
    else:
        write_atomically(Path(out), "".join(lines))
    return len(lines)


def write_atomically(path: Path, text: str) -> None:
    target = Path(os.path.realpath(path))  # through a symlink: replace the file it names
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ExportTargetError(f"{path} is {what}: give a file name to write the export to")
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # O_EXCL: never through someone else's file or link; 0o666 less the umask, as open() would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))  # an overwritten file keeps its permissions
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- validation ---------------------------------------------------------------------

class RecordProblem(Exception):
    """What is wrong with one line; read_jsonl adds the line number."""


def _typename(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object",
             list: "a list", bool: "true or false"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def checked_field(obj: dict, key: str, types, where: str = "", nullable: bool = False):
    """``obj[key]``, checked to be one of ``types``; ``where`` prefixes the key in errors."""
    if key not in obj:
        raise RecordProblem(f"missing key '{where}{key}'")
    value = obj[key]
    if value is None and nullable:
        return value
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise RecordProblem(f"'{where}{key}' must be {_typename(allowed)}")
    return value


def _timestamp(value: str, where: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise RecordProblem(f"'{where}' is not an ISO 8601 time: {value!r}") from None


def _messages(value: list, where: str) -> list[dict]:
    if not value:
        raise RecordProblem(f"'{where}' must be a non-empty list of messages")
    for i, message in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            raise RecordProblem(f"'{at}' must be an object with 'role' and 'content'")
        role = checked_field(message, "role", str, f"{at}.")
        content = checked_field(message, "content", str, f"{at}.")
        if role not in MESSAGE_ROLES:
            raise RecordProblem(f"'{at}' has role {role!r}; expected one of {MESSAGE_ROLES}")
        if role != "assistant" and not content.strip():
            raise RecordProblem(f"'{at}' is a {role} message with empty content")
    return value


def checked_prompt(value: list, where: str) -> list[dict]:
    messages = _messages(value, where)
    if any(m["role"] == "system" for m in messages[1:]):
        raise RecordProblem(f"'{where}' may hold a system message only first")
    if messages[-1]["role"] != "user":
        raise RecordProblem(f"'{where}' must end with a user message")
    return messages


def checked_answer(value: list, where: str) -> str:
    messages = _messages(value, where)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RecordProblem(f"'{where}' must be exactly one assistant message")
    return messages[0]["content"]


def _user_turns(prompt: list[dict]) -> list[str]:
    return [m["content"] for m in prompt if m["role"] == "user"]


def _check_meta(meta: dict, where: str, prompt: list[dict], side: str | None = None) -> None:
    for key, types in META_TYPES.items():
        checked_field(meta, key, types, f"{where}.", nullable=key not in REQUIRED_META)
    if meta["side"] not in SIDES or (side and meta["side"] != side):
        raise RecordProblem(f"'{where}.side' is {meta['side']!r}; expected {side or SIDES!r}")
    if meta["role"] not in ROLES:
        raise RecordProblem(f"'{where}.role' is {meta['role']!r}; expected one of {ROLES}")
    _timestamp(meta["created_at"], f"{where}.created_at")
    if meta["prompt"] is not None:
        own = checked_prompt(meta["prompt"], f"{where}.prompt")
        if _user_turns(own) != _user_turns(prompt):
            raise RecordProblem(f"'{where}.prompt' has other user messages than 'prompt'")


def check_record(record) -> None:
    """Check one parsed line; raises RecordProblem."""
    if not isinstance(record, dict):
        raise RecordProblem("a line must be a JSON object")
    prompt = checked_prompt(checked_field(record, "prompt", list), "prompt")
    choice = checked_field(record, "choice", str)
    if choice not in CHOICES:
        raise RecordProblem(f"'choice' is {choice!r}; expected one of {CHOICES}")
    checked_field(record, "blind", bool)
    _timestamp(checked_field(record, "created_at", str), "created_at")
    for key in ("vote_uid", "conversation_uid"):
        if not checked_field(record, key, str).strip():
            raise RecordProblem(f"'{key}' is empty")
    turn = checked_field(record, "turn", int)
    if len(_user_turns(prompt)) != turn + 1:
        raise RecordProblem(f"'prompt' has {len(_user_turns(prompt))} user messages, "
                       f"but 'turn' {turn} needs {turn + 1}")
    if choice in PAIR_CHOICES:
        chosen = checked_answer(checked_field(record, "chosen", list), "chosen")
        checked_answer(checked_field(record, "rejected", list), "rejected")
        rejected_meta = checked_field(record, "rejected_meta", dict)
        chosen_meta = checked_field(record, "chosen_meta", dict, nullable=choice == "better")
        if choice == "better":
            if not chosen.strip():
                raise RecordProblem("'chosen' is the user's better answer and cannot be empty")
            if chosen_meta is not None:
                raise RecordProblem("'chosen_meta' must be null for a 'better' vote")
            _check_meta(rejected_meta, "rejected_meta", prompt)
        else:
            _check_meta(chosen_meta, "chosen_meta", prompt, choice)
            _check_meta(rejected_meta, "rejected_meta", prompt, "right" if choice == "left" else "left")
    else:
        answers = checked_field(record, "responses", list)
        metas = checked_field(record, "responses_meta", list)
        if len(answers) != 2 or len(metas) != 2:
            raise RecordProblem("'responses' and 'responses_meta' must hold two items: left, right")
        if any(m["role"] != "assistant" for m in _messages(answers, "responses")):
            raise RecordProblem("'responses' must be assistant messages")
        for i, side in enumerate(SIDES):
            if not isinstance(metas[i], dict):
                raise RecordProblem(f"'responses_meta[{i}]' must be an object")
            _check_meta(metas[i], f"responses_meta[{i}]", prompt, side)


# -- reading and import -------------------------------------------------------------

def _response(text: str, meta: dict, prompt: list[dict]) -> dict:
    """Keyword arguments for Store.add_response, rebuilt from a line."""
    return {"side": meta["side"], "role": meta["role"], "text": text,
            "model": meta["model"], "model_path": meta["model_path"],
            "model_hash": meta["model_sha256"], "adapter": meta["adapter"],
            "adapter_path": meta["adapter_path"], "adapter_scale": meta["adapter_scale"],
            "template_name": meta["template_name"], "template_source": meta["template_source"],
            "params": meta["params"], "prompt_messages": meta["prompt"] or prompt,
            "n_tokens": meta["n_tokens"], "ttft_s": meta["ttft_s"],
            "tokens_per_s": meta["tokens_per_s"], "finish_reason": meta["finish_reason"],
            "created_at": meta["created_at"]}


def _vote(lines: list[tuple[int, dict]]) -> dict:
    """One vote rebuilt from its lines (two for 'better', else one); raises RecordProblem."""
    first = lines[0][1]
    expected = 2 if first["choice"] == "better" else 1
    if len(lines) != expected:
        raise RecordProblem(f"vote {first['vote_uid']} has {len(lines)} lines; "
                       f"a {first['choice']!r} vote has {expected}")
    about = ("choice", "blind", "created_at", "conversation_uid", "turn")
    if any(r[k] != first[k] for _, r in lines for k in about):
        raise RecordProblem(f"the two lines of vote {first['vote_uid']} disagree")
    vote = {k: first[k] for k in about} | {"uid": first["vote_uid"], "prompt": first["prompt"],
                                            "better_text": None}
    if first["choice"] in ("left", "right"):
        for key in ("chosen", "rejected"):
            meta = first[f"{key}_meta"]
            vote[meta["side"]] = _response(first[key][0]["content"], meta, first["prompt"])
    elif first["choice"] == "better":
        for side, (_, record) in zip(SIDES, lines):
            meta = record["rejected_meta"]
            if meta["side"] != side:
                raise RecordProblem("a 'better' vote's lines must show the left answer, "
                                    "then the right")
            vote[side] = _response(record["rejected"][0]["content"], meta, record["prompt"])
        if lines[0][1]["chosen"] != lines[1][1]["chosen"]:
            raise RecordProblem(f"the two lines of vote {first['vote_uid']} disagree on 'chosen'")
        vote["better_text"] = first["chosen"][0]["content"]
    else:
        for side, answer, meta in zip(SIDES, first["responses"], first["responses_meta"]):
            vote[side] = _response(answer["content"], meta, first["prompt"])
    return vote


def _check_conversations(votes: list[tuple[int, dict]]) -> None:
    """Votes of one conversation must agree on its system prompt and user turns."""
    seen: dict[str, dict] = defaultdict(dict)
    for line, vote in votes:
        known = seen[vote["conversation_uid"]]
        prompt = vote["prompt"]
        facts = {"system": prompt[0]["content"] if prompt[0]["role"] == "system" else ""}
        facts.update(enumerate(_user_turns(prompt)))
        for key, value in facts.items():
            if known.setdefault(key, value) != value:
                what = "system prompt" if key == "system" else f"user message of turn {key}"
                raise ImportFormatError(line, f"conversation {vote['conversation_uid']}: "
                                              f"{what} differs from an earlier line")


def _complete_plain_pair(record, imported_at: str):
    """A bare TRL pair (only prompt, chosen, rejected) from elsewhere, made a full line.

    It becomes a 'left' vote of two answers by an unknown model. Its uids are the hash
    of its content, so importing the same file twice adds it once.
    """
    if not isinstance(record, dict) or "choice" in record or not {"prompt", "chosen", "rejected"} <= record.keys():
        return record
    uid = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    prompt = record["prompt"] if isinstance(record["prompt"], list) else []

    def meta(side: str) -> dict:
        return {key: None for key in META_TYPES} | {
            "side": side, "role": "base", "model": "imported", "params": {},
            "created_at": imported_at}

    return {**record, "choice": "left", "blind": False, "created_at": imported_at,
            "vote_uid": uid, "conversation_uid": uid,
            "turn": max(len(_user_turns(prompt)) - 1, 0) if all(isinstance(m, dict) for m in prompt) else 0,
            "chosen_meta": meta("left"), "rejected_meta": meta("right")}


def _refuse_constant(name: str):
    raise RecordProblem(f"{name} is not standard JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RecordProblem(f"the number {text[:40]} is too large")
    return value


INT_MIN, INT_MAX = -2**63, 2**63 - 1  # what SQLite's INTEGER holds


def _sqlite_int(text: str) -> int:
    if len(text) > 20:  # before int() spends time on a huge one (and its 4300-digit limit)
        raise RecordProblem(f"the integer {text[:20]}... has {len(text.lstrip('-'))} digits, too large")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise RecordProblem(f"the integer {text} is too large")
    return value


def _loads(text: str):
    """One line as JSON, standard numbers only (RecordProblem otherwise)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                      parse_int=_sqlite_int)


MAX_LINE_BYTES = 64 * 2**20  # one vote is kilobytes; a "line" of /dev/zero never ends


class ImportFileError(UserError, ValueError):
    """An import file that is not one: a FIFO, a device, a folder."""


def raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Each line of a regular file with its number, none longer than MAX_LINE_BYTES
    (ImportFileError for a file that is not a regular file, ImportFormatError for a line
    too long): reading a FIFO or a device would wait or run for ever."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ImportFileError(f"{path}: not a regular file (a pipe, a device or a folder): "
                              "give a file written by 'diptych data export'")
    with open(path, "rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise ImportFormatError(number, f"longer than {MAX_LINE_BYTES:,} bytes")
            yield number, raw


def checked_lines(path: str | Path, check: Callable) -> Iterator[tuple[int, dict]]:
    """Each non-blank line of a JSON lines file with its number, parsed (standard numbers
    only) and passed through ``check`` (which raises RecordProblem); ImportFormatError names the
    first line that fails. Both exchange formats read their files through this."""
    for number, raw in raw_lines(path):
        try:
            text = raw.decode("utf-8")
            if not text.strip():
                continue
            parsed = _loads(text)
            if "\\ud" in text.lower():  # an escaped surrogate: "\ud800" alone is no character
                json.dumps(parsed, ensure_ascii=False).encode("utf-8")
            record = check(parsed)
        except UnicodeDecodeError:
            raise ImportFormatError(number, "not UTF-8 text") from None
        except UnicodeEncodeError:
            raise ImportFormatError(number, "a string holds a lone surrogate (such as "
                                    "\"\\ud800\"), which is no character") from None
        except RecursionError:
            raise ImportFormatError(number, "nested too deeply to read") from None
        except json.JSONDecodeError as exc:
            raise ImportFormatError(number, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        except RecordProblem as exc:
            raise ImportFormatError(number, str(exc)) from None
        yield number, record


def _parse(path: str | Path) -> tuple[list[dict], list[tuple[int, dict]]]:
    """Every line parsed and checked, then the votes they make (with each vote's last line)."""
    records, groups, last_line = [], defaultdict(list), {}
    imported_at = now()

    def check(obj):
        record = _complete_plain_pair(obj, imported_at)
        check_record(record)
        return record

    for number, record in checked_lines(path, check):
        records.append(record)
        groups[record["vote_uid"]].append((number, record))
        last_line[record["vote_uid"]] = number
    votes = []
    for uid, lines in groups.items():
        try:
            votes.append((last_line[uid], _vote(lines)))
        except RecordProblem as exc:
            raise ImportFormatError(last_line[uid], str(exc)) from None
    _check_conversations(votes)
    return records, votes


def read_jsonl(path: str | Path) -> list[dict]:
    """All lines of a preference file, after checking the whole file (ImportFormatError)."""
    return _parse(path)[0]


def import_jsonl(store: Store, path: str | Path) -> int:
    """Add a preference file's votes to the store, all or none; returns lines imported.

    The whole file is checked before anything is written; votes the store already holds
    (same ``vote_uid``) are skipped.
    """
    _, votes = _parse(path)
    try:  # staged, so the store's write lock is held only for a short final copy
        return staged_import.write_votes(store, votes)
    except staged_import.ConflictError as exc:  # disagrees with what the store already holds
        raise ImportFormatError(exc.line, str(exc)) from None
