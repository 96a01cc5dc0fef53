"""Soak: thousands of votes while a training job reads the store and a large import runs.

The app records a turn as two ``add_response`` calls and a ``record_vote`` on one store;
that is what is timed here, vote after vote. Meanwhile:

- a reader process does what a job does at its start, over and over: opens the store and
  builds the preference records from every vote;
- an importer process runs ``diptych data import`` on a file of many votes.

Reported: votes lost (acknowledged but absent afterwards: must be 0), votes that failed,
``PRAGMA integrity_check``, and the vote latency (median, p99, longest) against the same
votes recorded on an idle store in the same run (the reference).

Run: ``python bench/soak_bench.py [--votes 5000] [--import-lines 10000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from diptych import paths
from diptych.training.preferences import export_jsonl
from diptych.training.store import Store

READER = textwrap.dedent("""
    import sys, time
    from diptych.training.preferences import records
    from diptych.training.store import Store
    reads = 0
    while True:
        with Store(sys.argv[1]) as store:
            records(store)
        reads += 1
        print(reads, flush=True)
""")


def record_turn(store: Store, i: int) -> int:
    conversation = store.new_conversation()
    store.add_user_message(conversation, 0, f"Question {i}: what is {i} plus {i}?")
    shown = dict(model="gemma", model_path="/m.gguf", model_hash="ab" * 32, adapter_path=None,
                 adapter_scale=None, template_name="gemma", template_source=None,
                 params={"temperature": 0.8, "seed": i},
                 prompt_messages=[{"role": "user", "content": f"Question {i}"}], n_tokens=9,
                 ttft_s=0.05, tokens_per_s=60.0, finish_reason="stop")
    left = store.add_response(conversation, 0, "left", "base", f"{2 * i}.", adapter=None, **shown)
    right = store.add_response(conversation, 0, "right", "tuned", f"What is {i}?", adapter="v1", **shown)
    return store.record_vote(left, right, "left", False)


def vote_run(db: Path, count: int) -> tuple[list[int], list[float], int]:
    """Acknowledged vote ids, each vote's latency in seconds, and how many raised."""
    acknowledged, latencies, failed = [], [], 0
    with Store(db) as store:
        for i in range(count):
            start = time.perf_counter()
            try:
                acknowledged.append(record_turn(store, i))
            except Exception as exc:  # counted, and the run goes on
                failed += 1
                print(f"vote {i} failed: {exc}", file=sys.stderr)
            latencies.append(time.perf_counter() - start)
    return acknowledged, latencies, failed


def import_file(folder: Path, lines: int) -> Path:
    with Store(folder / "source.sqlite") as source:
        record_turn(source, 0)
        export_jsonl(source, folder / "one.jsonl")
    line = json.loads((folder / "one.jsonl").read_text())
    path = folder / "import.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps(line | {"vote_uid": f"soak-v{i}", "conversation_uid": f"soak-c{i}"}) + "\n")
    return path


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {"median_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            "max_ms": 1000 * ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=5000)
    parser.add_argument("--import-lines", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="diptych-soak-"))

    idle = vote_run(folder / "idle.sqlite", args.votes)[1]

    home = folder / "home"
    db = paths.db_path(home)
    Store(db).close()
    big = import_file(folder, args.import_lines)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdout=subprocess.PIPE, text=True)
    importer = subprocess.Popen([sys.executable, "-m", "diptych", "--data-dir", str(home),
                                 "data", "import", str(big)], stderr=subprocess.PIPE, text=True)
    started = time.perf_counter()
    acknowledged, latencies, failed = vote_run(db, args.votes)
    voting_s = time.perf_counter() - started
    import_err = importer.communicate()[1]
    reader.terminate()
    reads = len(reader.communicate()[0].split())

    with Store(db) as store:
        present = {row[0] for row in store.db.execute("SELECT id FROM votes")}
        integrity = store.db.execute("PRAGMA integrity_check").fetchone()[0]
        total = len(present)
    lost = len(set(acknowledged) - present)
    soak, reference = summary(latencies), summary(idle)
    print(f"votes: {len(acknowledged)} acknowledged, {failed} failed, {lost} lost "
          f"(must be 0); integrity_check: {integrity}; store holds {total} votes "
          f"(import exit {importer.returncode}{': ' + import_err.strip() if importer.returncode else ''})")
    print(f"meanwhile: {reads} full reads of the store by the job reader; voting took {voting_s:.1f} s")
    for key in ("median_ms", "p99_ms", "max_ms"):
        print(f"vote latency {key[:-3]:>6}: {soak[key]:7.1f} ms soaked, {reference[key]:7.1f} ms idle "
              f"(ratio {soak[key] / reference[key]:.1f}x)")


if __name__ == "__main__":
    main()
