"""Votes as unpaired labels: TRL's unpaired preference format (``prompt``, ``completion``,
``label``), for KTO.

Which vote gives which labels (design.md, "Data: which vote feeds which job"):

- ``left`` / ``right``: the winner is desirable, the loser undesirable;
- ``both_bad``: both answers undesirable;
- ``better`` (a written answer): the written answer is desirable (the shown answers get no
  label: the user improved on them, which does not make them bad);
- ``tie``: nothing by default (``ties="skip"``): a tie says the two answers are alike, not
  whether they are good. ``ties="desirable"`` labels both desirable, for users who press
  Tie when both answers are fine.

Each line, beside TRL's keys, carries the vote's metadata as the pair format does
(``vote_uid``, ``choice``, ``blind``, ``created_at``, ``conversation_uid``, ``turn``),
``side`` (``left``, ``right`` or ``written``), ``completion_meta`` (the shown response's
meta, null for a written answer), and, on a written answer's line, ``shown``: the two
answers it improved on, each ``{"completion": [...], "completion_meta": {...}}``; so an
export can be imported again (``diptych data import``) without losing a vote.

A bare line from elsewhere (only ``prompt``, ``completion``, ``label``) is a training
example, not a vote: ``diptych train kto --data FILE`` trains on it; import refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import preferences as prefs
from .store import Store, usable_vote

TIES = ("skip", "desirable")


def vote_labels(vote: dict, ties: str = "skip") -> list[dict]:
    """The unpaired lines one vote (a row of ``Store.votes()``) gives."""
    left, right = vote["left"], vote["right"]
    about = {"choice": vote["choice"], "blind": vote["blind"], "created_at": vote["created_at"],
             "vote_uid": vote["uid"], "conversation_uid": vote["conversation_uid"],
             "turn": vote["turn"]}

    def line(response: dict, label: bool) -> dict:
        prompt = response["prompt_messages"]
        return {"prompt": prompt, "completion": [prefs.assistant_message(response["text"])],
                "label": label, **about, "side": response["side"],
                "completion_meta": prefs.response_meta(response, prompt)}

    choice = vote["choice"]
    if choice in ("left", "right"):
        winner, loser = (left, right) if choice == "left" else (right, left)
        return [line(winner, True), line(loser, False)]
    if choice == "both_bad":
        return [line(left, False), line(right, False)]
    if choice == "tie":
        return [line(left, True), line(right, True)] if ties == "desirable" else []
    prompt = left["prompt_messages"]
    shown = [{"completion": [prefs.assistant_message(r["text"])],
              "completion_meta": prefs.response_meta(r, prompt)}
             for r in (left, right)]
    return [{"prompt": prompt, "completion": [prefs.assistant_message(vote["better_text"])],
             "label": True, **about, "side": "written", "completion_meta": None, "shown": shown}]


def records(store: Store, ties: str = "skip", adapter: str | None = None) -> list[dict]:
    """The store's live votes as unpaired lines, oldest first."""
    return [line for vote in store.votes(adapter=adapter) if usable_vote(vote)
            for line in vote_labels(vote, ties)]


def export_jsonl(store: Store, out, ties: str = "skip") -> int:
    """Write the unpaired lines to a path (whole or not at all) or an open text file."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records(store, ties)]
    if hasattr(out, "write"):
        out.writelines(lines)
    else:
        prefs.write_atomically(Path(out), "".join(lines))
    return len(lines)


# -- reading --------------------------------------------------------------------------

def is_unpaired(record) -> bool:
    return isinstance(record, dict) and "completion" in record and "label" in record


def check_line(record, label_required: bool = True) -> dict:
    """Check one parsed unpaired line (TRL's keys, and ours where present); raises RecordProblem.
    Without ``label_required`` a plain prompt-completion line (SFT's format) passes too."""
    if not isinstance(record, dict):
        raise prefs.RecordProblem("a line must be a JSON object")
    prompt = prefs.checked_prompt(prefs.checked_field(record, "prompt", list), "prompt")
    answer = prefs.checked_answer(prefs.checked_field(record, "completion", list), "completion")
    if not label_required and "label" not in record:
        return record
    label = prefs.checked_field(record, "label", bool)
    if "vote_uid" not in record:
        return record  # a bare TRL line: a training example
    prefs.checked_field(record, "vote_uid", str)  # lines are grouped by it, and by side
    if prefs.checked_field(record, "side", str) not in ("left", "right", "written"):
        raise prefs.RecordProblem("'side' must be 'left', 'right' or 'written'")
    pair = _as_pair_records(record, prompt, answer, label)
    for one in pair:
        prefs.check_record(one)
    return record


def _as_pair_records(record: dict, prompt: list, answer: str, label: bool) -> list[dict]:
    """The pair-format lines of the vote this line belongs to, as far as this line tells
    (a line of a left/right or both-bad vote needs its partner: see :func:`to_pair_records`)."""
    choice = prefs.checked_field(record, "choice", str)
    if record.get("side") == "written":
        if choice != "better" or not label:
            raise prefs.RecordProblem("a written answer's line must be a desirable line "
                                      "of a 'better' vote")
        shown = prefs.checked_field(record, "shown", list)
        if len(shown) != 2 or not all(isinstance(s, dict) for s in shown):
            raise prefs.RecordProblem("'shown' must hold the two shown answers: left, right")
        about = {k: record.get(k) for k in ("choice", "blind", "created_at", "vote_uid",
                                              "conversation_uid", "turn")}
        out = []
        for i, s in enumerate(shown):
            meta = prefs.checked_field(s, "completion_meta", dict, f"shown[{i}].")
            own = meta.get("prompt") if isinstance(meta.get("prompt"), list) else prompt
            out.append({"prompt": own, "chosen": [prefs.assistant_message(answer)],
                        "rejected": prefs.checked_field(s, "completion", list, f"shown[{i}]."),
                        **about, "chosen_meta": None, "rejected_meta": {**meta, "prompt": None}})
        return out
    return []


def to_pair_records(lines: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Our unpaired lines regrouped into the pair-format lines of their votes (for import);
    raises ImportFormatError naming the line."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for number, record in lines:
        if "vote_uid" not in record:
            raise prefs.ImportFormatError(number, "a bare unpaired line (no 'vote_uid') is a training "
                                          "example, not a vote: train on the file with "
                                          "'diptych train kto --data FILE'")
        groups.setdefault(record["vote_uid"], []).append((number, record))
    out = []
    for uid, group in groups.items():
        number = group[-1][0]
        try:
            out += [(number, r) for r in _vote_pairs(group)]
        except prefs.RecordProblem as exc:
            raise prefs.ImportFormatError(number, str(exc)) from None
    return out


def _vote_pairs(group: list[tuple[int, dict]]) -> list[dict]:
    records = [r for _, r in group]
    first = records[0]
    choice = first["choice"]
    about = {k: first.get(k) for k in ("choice", "blind", "created_at", "vote_uid",
                                        "conversation_uid", "turn")}
    if choice == "better":
        if len(records) != 1:
            raise prefs.RecordProblem(f"vote {first['vote_uid']}: "
                                      "a 'better' vote has one unpaired line")
        return _as_pair_records(first, first["prompt"], first["completion"][0]["content"], True)
    by_side = {r.get("side"): r for r in records}
    if len(records) != 2 or set(by_side) != {"left", "right"}:
        raise prefs.RecordProblem(f"vote {first['vote_uid']}: "
                                  "needs one line for each side, left and right")
    left, right = by_side["left"], by_side["right"]
    metas = []
    for r in (left, right):
        meta = prefs.checked_field(r, "completion_meta", dict)
        metas.append({**meta, "prompt": None if r["prompt"] == left["prompt"] else r["prompt"]})
    if choice in ("left", "right"):
        winner, loser = (0, 1) if choice == "left" else (1, 0)
        pair = (left, right)
        if not pair[winner]["label"] or pair[loser]["label"]:
            raise prefs.RecordProblem(f"vote {first['vote_uid']}: "
                                      "the winner must be desirable, the loser not")
        prompt = pair[winner]["prompt"]
        metas = [{**m, "prompt": None if r["prompt"] == prompt else r["prompt"]}
                 for m, r in zip(metas, (left, right))]
        return [{"prompt": prompt, "chosen": pair[winner]["completion"],
                 "rejected": pair[loser]["completion"], **about,
                 "chosen_meta": metas[winner], "rejected_meta": metas[loser]}]
    return [{"prompt": left["prompt"], "responses": [left["completion"][0], right["completion"][0]],
             **about, "responses_meta": metas}]


def read_jsonl(path: str | Path, label_required: bool = True) -> list[dict]:
    """Every line of an unpaired file, checked whole first (ImportFormatError names the line)."""
    return [record for _, record in
            prefs.checked_lines(path, lambda obj: check_line(obj, label_required))]


# -- import ---------------------------------------------------------------------------

def import_jsonl(store: Store, path: str | Path) -> int:
    """Add the votes of an unpaired file written by :func:`export_jsonl`, all or none;
    returns the pair-format lines their votes make (as ``preferences.import_jsonl`` counts).

    Every line is checked, then each vote is rebuilt from its lines (a left/right or
    both-bad vote needs both sides' lines) and imported through the pair format's import,
    which checks the votes again against each other and the store."""
    import os
    import tempfile

    numbers = [number for number, raw in prefs.raw_lines(path) if raw.strip()]
    records = read_jsonl(path)  # every line checked; errors name the line
    lines = list(zip(numbers, records))
    pairs = sorted(to_pair_records(lines), key=lambda item: item[0])
    for number, record in pairs:
        try:
            prefs.check_record(record)
        except prefs.RecordProblem as exc:
            raise prefs.ImportFormatError(number, str(exc)) from None
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", prefix=".diptych-unpaired-")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for _, r in pairs)
        try:
            return prefs.import_jsonl(store, tmp)
        except prefs.ImportFormatError as exc:  # name the line of the file the user gave
            raise prefs.ImportFormatError(pairs[exc.line - 1][0], exc.problem) from None
    finally:
        os.unlink(tmp)


def is_unpaired_file(path: str | Path) -> bool:
    """Whether a JSON lines file's first record is in the unpaired format."""
    for _, raw in prefs.raw_lines(path):  # a regular file, lines of a bounded length
        if raw.strip():
            try:
                return is_unpaired(json.loads(raw))
            except (ValueError, RecursionError):  # the importer says why, with the line
                return False
    return False
