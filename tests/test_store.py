"""The reward-data store on real SQLite files: schema, votes, durability, two processes."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import record_sample_vote

from diptych.training.store import KNOWN_MIGRATIONS, Store, StoreVersionError

TESTS = Path(__file__).parent


def _in_child(code: str) -> list[str]:
    """argv running ``code`` in a fresh interpreter that can import this module."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TESTS)!r}); {code}"]


def vote_forever(path: str, count: int = 10**9) -> None:
    """Child process: record votes, printing each id once record_vote has returned."""
    store = Store(path)
    print("ready", flush=True)
    for _ in range(count):
        print(record_sample_vote(store), flush=True)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "diptych.sqlite") as s:
        yield s


def test_migrates_an_empty_file_once(tmp_path):
    path = tmp_path / "new.sqlite"
    with Store(path) as first:
        assert first.db.journal_mode == "wal"
        assert first.schema_version() == len(KNOWN_MIGRATIONS)
        assert {"conversations", "messages", "responses", "votes"} <= set(first.db.table_names())
        record_sample_vote(first)
    with Store(path) as again:
        assert again.schema_version() == len(KNOWN_MIGRATIONS)
        assert len(again.votes()) == 1


def test_open_uses_the_data_dir(data_dir):
    with Store.open() as s:
        assert s.path == data_dir / "diptych.sqlite"


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.sqlite"
    with Store(path) as s:
        record_sample_vote(s)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('diptych', 'm999_from_the_future', '2031-01-01')")
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreVersionError, match="newer version of Diptych.*m999_from_the_future"):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_vote_round_trip_and_soft_delete(store):
    vote_id = record_sample_vote(store, "right", system="Be brief.")
    vote = store.vote_by_id(vote_id)
    assert vote["choice"] == "right" and vote["blind"] is True and vote["prompt"] == "What is 2+2?"
    assert vote["left"]["role"] == "base" and vote["left"]["adapter"] is None
    assert vote["right"]["adapter"] == "v1" and vote["right"]["params"]["seed"] == 7
    assert vote["right"]["prompt_messages"][0] == {"role": "system", "content": "Be brief."}

    store.undo_vote(vote_id)
    assert store.votes() == [] and store.pair_counts()["votes"] == 0
    assert store.vote_by_id(vote_id)["deleted_at"] is not None
    assert len(store.votes(include_deleted=True)) == 1
    store.restore_vote(vote_id)
    assert [v["id"] for v in store.votes()] == [vote_id]
    with pytest.raises(KeyError):
        store.delete_vote(9999)


def test_every_write_is_committed_on_return(store):
    vote_id = record_sample_vote(store)
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT id FROM votes").fetchall() == [(vote_id,)]
    store.delete_vote(vote_id)
    assert other.execute("SELECT deleted_at IS NOT NULL FROM votes").fetchone() == (1,)
    other.close()


def test_filters_counts_and_conversations(store):
    record_sample_vote(store, "left", right="v1", prompt="Name a colour")
    record_sample_vote(store, "tie", right="v2", prompt="Say 100% sure_thing")
    record_sample_vote(store, "better", left="v1", right="v2", better_text="Mine is better")
    record_sample_vote(store, "both_bad", right="v2")
    assert [v["choice"] for v in store.votes(adapter="v1")] == ["left", "better"]
    assert [v["choice"] for v in store.votes(adapter="base")] == ["left", "tie", "both_bad"]
    assert [v["choice"] for v in store.votes(choice="tie")] == ["tie"]
    assert [v["choice"] for v in store.votes(text="colour")] == ["left"]
    assert [v["choice"] for v in store.votes(text="100% sure_")] == ["tie"]
    assert [v["choice"] for v in store.votes(text="mine IS")] == ["better"]
    assert store.pair_counts() == {"left": 1, "right": 0, "tie": 1, "both_bad": 1,
                                   "better": 1, "pairs": 3, "votes": 4}
    found = store.conversations("colour")
    assert [c["title"] for c in found] == ["Name a colour"] and found[0]["n_votes"] == 1
    assert len(store.conversations()) == 4
    full = store.conversation(found[0]["id"])
    assert [m["content"] for m in full["messages"]] == ["Name a colour"]
    assert [r["side"] for r in full["responses"]] == ["left", "right"]
    assert [v["choice"] for v in full["votes"]] == ["left"]


def test_recent_prompts_are_distinct_and_newest_first(store):
    for prompt in ("first", "second", "first"):
        record_sample_vote(store, prompt=prompt)
    assert store.recent_prompts(10) == [[{"role": "user", "content": "first"}],
                                        [{"role": "user", "content": "second"}]]
    assert len(store.recent_prompts(1)) == 1


def test_bad_writes_are_refused(store):
    with pytest.raises(ValueError, match="choice"):
        record_sample_vote(store, "maybe")
    with pytest.raises(ValueError, match="better"):
        record_sample_vote(store, "better")
    with pytest.raises(ValueError, match="better"):
        record_sample_vote(store, "left", better_text="why not")
    cid = store.new_conversation("", False)
    first = store.add_user_message(cid, 0, "hello")
    assert store.add_user_message(cid, 0, "hello") == first  # the same message again: no-op
    with pytest.raises(ValueError, match="different"):
        store.add_user_message(cid, 0, "goodbye")
    with pytest.raises(ValueError):
        store.add_user_message(cid, 1, "   ")
    vote = store.vote_by_id(record_sample_vote(store))
    with pytest.raises(ValueError, match="left response"):
        store.record_vote(vote["right_response_id"], vote["left_response_id"], "left", True)
    assert store.pair_counts()["votes"] == 1


def test_acknowledged_votes_survive_sigkill(tmp_path):
    path = tmp_path / "killed.sqlite"
    Store(path).close()
    child = subprocess.Popen(_in_child(f"import test_store; test_store.vote_forever({str(path)!r})"),
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    acknowledged = [int(child.stdout.readline()) for _ in range(20)]
    time.sleep(0.1)  # let it run on: the kill lands anywhere in a write
    os.kill(child.pid, signal.SIGKILL)
    acknowledged += [int(line) for line in child.stdout.read().split()]
    child.wait()
    assert child.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = {row[0] for row in conn.execute("SELECT id FROM votes")}
    conn.close()
    assert set(acknowledged) <= stored
    print(f"{len(acknowledged)} votes acknowledged before SIGKILL, all present "
          f"({len(stored)} in the file)")


def test_two_processes_write_at_once(tmp_path):
    # With deferred transactions this fails at once with "database is locked".
    path = tmp_path / "shared.sqlite"
    with Store(path) as store:
        child = subprocess.Popen(
            _in_child(f"import test_store; test_store.vote_forever({str(path)!r}, 150)"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        mine = [record_sample_vote(store, right="v2") for _ in range(150)]
        out, err = child.communicate(timeout=60)
        theirs = [int(line) for line in out.split()]
        assert child.returncode == 0, err
        assert "locked" not in err
        assert len(store.votes()) == 300 and len(theirs) == 150
        assert set(mine).isdisjoint(theirs)
        assert time.monotonic() - started < 30


def test_importing_the_store_stays_light():
    code = ("import sys, diptych.training.store, diptych.training.preferences, "
            "diptych.training.winrates; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'transformers', 'trl', 'peft', 'PySide6', 'superqt', 'pyqtgraph'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_counts_since_a_time_compare_times_not_text(store):
    record_sample_vote(store, "left", created_at="2026-11-30T10:00:00.500000+00:00")
    record_sample_vote(store, "tie", created_at="2026-11-30T10:00:01.000000+00:00")
    record_sample_vote(store, "better", better_text="Mine", created_at="2026-11-30T11:30:00+01:00")
    # an adapter's created_at (whole seconds) against votes' (microseconds, any offset)
    assert store.pair_counts("2026-11-30T10:00:00+00:00") == {
        "left": 1, "right": 0, "tie": 1, "both_bad": 0, "better": 1, "pairs": 3, "votes": 3}
    assert store.pair_counts("2026-11-30T10:00:00.600000+00:00")["votes"] == 2
    assert store.pair_counts("2026-11-30T10:30:00+00:00")["votes"] == 0  # 11:30+01:00 is 10:30 UTC: not after
