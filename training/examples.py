"""What the vote-trained kinds train on: a file, or the votes in the store (since the
``--from`` adapter was made, with ``--new-votes``), as each kind's TRL dataset rows.

- :func:`load_pairs`: preference pairs (``prompt``, ``chosen``, ``rejected``), for DPO and
  the reward model;
- :func:`load_labels`: labelled answers (``prompt``, ``completion``, ``label``), for KTO;
- :func:`load_answers`: written (and, with ``chosen``, chosen) answers (``prompt``,
  ``completion``), for SFT.

Each returns the rows and a description of the data for meta.json; an answer that was
cut off carries ``truncated`` (``turns.py``). Which vote gives which rows: ``unpaired.py``
and ``preferences.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from . import turns, unpaired
from .errors import JobError
from .job import sha256_of
from .parent import newer, votes_since

PAIR_KEYS = ("prompt", "chosen", "rejected")
LABEL_KEYS = ("prompt", "completion", "label")
# A pair's answers that were cut off are trained without their end-of-turn tokens (turns.py).
UNFINISHED_COLUMNS = {"chosen_truncated": ("chosen_ids",), "rejected_truncated": ("rejected_ids",)}


def file_or_votes(cfg, what: str, from_file: Callable[[Path], list[dict]],
                  from_store: Callable[[object], list[dict]]) -> tuple[list[dict], str]:
    """(records, their source): ``from_file(path)`` of ``cfg.data``, else ``from_store(store)``
    narrowed to the votes since the parent with ``cfg.new_votes``. ``what``: the file, in
    the error for a path that is not one."""
    since = votes_since(cfg)
    if cfg.data:
        path = Path(cfg.data).expanduser()
        if not path.is_file():
            raise JobError(f"{path}: no such {what}")
        return from_file(path), str(path.resolve())
    from .store import Store

    with Store.open(cfg.data_dir) as store:
        records = newer(from_store(store), since)
        left_out = store.left_out()
    return records, ("store" if since is None else f"store, votes since {since}") + left_out


def first_record(path: Path):
    """The first line of a JSON lines file, parsed (None when it is not JSON)."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    return json.loads(raw)
                except ValueError:
                    return None  # the full read reports it with its line number
    return None


def _pair_file(path: Path) -> list[dict]:
    from .preferences import read_jsonl

    return read_jsonl(path)


def _unique(examples) -> list[dict]:
    """``examples`` without repeats (a written answer exported as two pairs counts once)."""
    kept, seen = [], set()
    for example in examples:
        key = json.dumps(example, sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def load_pairs(cfg) -> tuple[list[dict], dict]:
    """(pairs with only TRL's keys and the truncation columns, a description for meta.json)."""
    from .preferences import records as pair_records

    records, source = file_or_votes(cfg, "preference file", _pair_file, pair_records)
    # Ties and both-bad lines are not pairs; the metadata keys mean nothing to TRL.
    pairs = [{**{k: r[k] for k in PAIR_KEYS},
              "chosen_truncated": turns.unfinished(r.get("chosen_meta")),
              "rejected_truncated": turns.unfinished(r.get("rejected_meta"))}
             for r in records if all(k in r for k in PAIR_KEYS)]
    if not pairs:
        raise JobError(f"no preference pairs in {source}: vote for answers in the app first, "
                       "or pass --data FILE.jsonl")
    return pairs, {"source": source, "pairs": len(pairs), "sha256": sha256_of(pairs)}


def _labels_file(path: Path) -> list[dict]:
    """An unpaired file's lines, or a pair file's: the chosen answer desirable, the rejected not."""
    if unpaired.is_unpaired(first_record(path)):
        return unpaired.read_jsonl(path)
    return [line for pair in _pair_file(path) if "chosen" in pair
            for line in ({**pair, "completion": pair["chosen"], "label": True,
                          "completion_meta": pair.get("chosen_meta")},
                         {**pair, "completion": pair["rejected"], "label": False,
                          "completion_meta": pair.get("rejected_meta")})]


def load_labels(cfg) -> tuple[list[dict], dict]:
    """(labelled answers with TRL's keys and ``truncated``, a description for meta.json);
    ``cfg.ties``: what a tie gives (``unpaired.TIES``)."""
    if cfg.ties not in unpaired.TIES:
        raise JobError(f"--ties must be one of {', '.join(unpaired.TIES)}, not {cfg.ties!r}")
    lines, source = file_or_votes(cfg, "data file", _labels_file,
                                  lambda store: unpaired.records(store, cfg.ties))
    examples = _unique({**{k: line[k] for k in LABEL_KEYS},
                        "truncated": turns.unfinished(line.get("completion_meta"))} for line in lines)
    if not examples:
        raise JobError(f"no labelled answers in {source}: vote for answers in the app first, "
                       "or pass --data FILE.jsonl")
    desirable = sum(e["label"] for e in examples)
    return examples, {"source": source, "examples": len(examples), "desirable": desirable,
                      "undesirable": len(examples) - desirable, "ties": cfg.ties,
                      "sha256": sha256_of(examples)}


def _answers_file(path: Path, chosen: bool) -> list[dict]:
    """Written (or, with ``chosen``, all desirable) answers of an unpaired file, plain
    prompt-completion lines, or the chosen answers of a pair file."""
    first = first_record(path)
    if isinstance(first, dict) and "completion" in first:
        return [line for line in unpaired.read_jsonl(path, label_required=False)
                if line.get("label", True) and (chosen or line.get("side", "written") == "written")]
    return [{**pair, "completion": pair["chosen"], "completion_meta": pair.get("chosen_meta")}
            for pair in _pair_file(path)
            if "chosen" in pair and (chosen or pair.get("choice", "better") == "better")]


def load_answers(cfg) -> tuple[list[dict], dict]:
    """(prompt-completion examples with ``truncated``, a description for meta.json);
    ``cfg.chosen``: the chosen answers of left/right votes too, not only written ones."""
    def from_store(store) -> list[dict]:
        return [line for line in unpaired.records(store)
                if line["side"] == "written"
                or (cfg.chosen and line["label"] and line["choice"] in ("left", "right"))]

    lines, source = file_or_votes(cfg, "data file", lambda path: _answers_file(path, cfg.chosen),
                                  from_store)
    examples = _unique({"prompt": line["prompt"], "completion": line["completion"],
                        "truncated": turns.unfinished(line.get("completion_meta"))} for line in lines)
    if not examples:
        what = "written or chosen answers" if cfg.chosen else "written answers"
        raise JobError(f"no {what} in {source}: write a better answer in the app "
                       "(or pass --chosen to learn from the answers you chose too)")
    return examples, {"source": source, "examples": len(examples), "chosen": cfg.chosen,
                      "sha256": sha256_of(examples)}
