"""How many votes a second the store records, against bare sqlite3 in the same run.

Two measurements, each against a reference on the same disk: plain ``sqlite3`` inserting
the same rows into tables created from the store's own schema, in WAL mode with the
same ``synchronous=FULL``, one ``BEGIN``/``INSERT``/``COMMIT`` per row.

- vote: ``Store.record_vote`` on two stored responses (validation reads included)
  against one bare INSERT+COMMIT into ``votes``.
- turn: two ``add_response`` calls with full responses and a ``record_vote``, against
  three bare INSERT+COMMITs.

Run: ``python bench/store_bench.py [--n 200] [--rounds 5]``; prints medians.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from diptych.training.store import Store, new_uid, now

PROMPT = [{"role": "system", "content": "Answer briefly."},
          {"role": "user", "content": "Why is the sky blue? " * 4}]
RESPONSE = dict(
    model="gemma-3-270m-q4_k_m", model_path="/models/gemma-3-270m-q4_k_m.gguf",
    model_hash="9f" * 32, adapter="v3", adapter_path="/data/adapters/v3", adapter_scale=1.0,
    template_name="gemma", template_source="{% for m in messages %}...{% endfor %}" * 8,
    params={"temperature": 0.8, "top_p": 0.95, "max_tokens": 256, "seed": 1},
    prompt_messages=PROMPT, n_tokens=120, ttft_s=0.04, tokens_per_s=63.1,
    finish_reason="stop")
TEXT = "Rayleigh scattering: shorter wavelengths scatter more. " * 10


def rate(n: int, act, prepare=tuple) -> float:
    """Calls of ``act(*prepare())`` a second, timing ``act`` only."""
    spent = 0.0
    for _ in range(n):
        args = prepare()
        start = time.perf_counter()
        act(*args)
        spent += time.perf_counter() - start
    return n / spent


def store_steps(store: Store):
    """(prepare, act) for one vote, and for one whole turn, through the store."""
    cid = store.new_conversation("Answer briefly.", True)
    store.add_user_message(cid, 0, PROMPT[-1]["content"])

    def pair() -> list[int]:
        return [store.add_response(cid, 0, side, role, TEXT, **RESPONSE)
                for side, role in (("left", "base"), ("right", "tuned"))]

    def vote(left: int, right: int) -> int:
        return store.record_vote(left, right, "right", True)

    return (pair, vote), (tuple, lambda: vote(*pair()))


def bare_steps(conn: sqlite3.Connection):
    """The same two steps as plain INSERT+COMMITs."""
    response = {**RESPONSE, "params": json.dumps(RESPONSE["params"]),
                "prompt_messages": json.dumps(PROMPT), "model_sha256": RESPONSE["model_hash"]}
    del response["model_hash"]
    columns = ["conversation_id", "turn", "side", "role", "text", "created_at", *response]

    def insert(table: str, row: dict) -> int:
        conn.execute("BEGIN")
        cursor = conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                              f"({', '.join('?' * len(row))})", list(row.values()))
        conn.execute("COMMIT")
        return cursor.lastrowid

    def add_response(side: str) -> int:
        return insert("responses", dict(zip(columns, [1, 0, side, "base", TEXT, now(),
                                                      *response.values()])))

    def vote(left: int, right: int) -> int:
        return insert("votes", {"uid": new_uid(), "conversation_id": 1, "turn": 0,
                                "left_response_id": left, "right_response_id": right,
                                "choice": "right", "blind": 1, "better_text": None,
                                "created_at": now(), "deleted_at": None})

    return (lambda: (1, 2), vote), (tuple, lambda: vote(add_response("left"), add_response("right")))


def bare_connection(schema_from: Path, path: Path) -> sqlite3.Connection:
    """A WAL, synchronous=FULL database with the store's responses and votes tables."""
    source = sqlite3.connect(schema_from)
    schema = [sql for (sql,) in source.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN ('responses', 'votes')")]
    source.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA synchronous = FULL")
    for sql in schema:
        conn.execute(sql)
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="votes per measurement and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians shown")
    args = parser.parse_args()
    names = ("vote (record_vote)", "turn (2 responses + vote)")
    results = {(name, kind): [] for name in names for kind in ("store", "bare")}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite")
        bare = bare_connection(store.path, Path(tmp) / "bare.sqlite")
        steps = {"store": store_steps(store), "bare": bare_steps(bare)}
        for _ in range(args.rounds):  # alternate, so a noisy disk hits both alike
            for kind, pair in steps.items():
                for name, (prepare, act) in zip(names, pair):
                    results[name, kind].append(rate(args.n, act, prepare))
        store.close()
        bare.close()
    for name in names:
        mine, ref = (statistics.median(results[name, kind]) for kind in ("store", "bare"))
        print(f"{name:<28} store {mine:7.0f}/s   bare sqlite3 {ref:7.0f}/s   ratio {mine / ref:.2f}")


if __name__ == "__main__":
    main()
