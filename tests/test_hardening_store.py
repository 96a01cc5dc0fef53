"""Hardening of the store and the command line: a vote while a large import runs, a
read-only data directory, a full disk under a job, and the one line for user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import read_only, record_sample_vote

from diptych import cli, paths
from diptych.models.errors import UserError
from diptych.training.preferences import export_jsonl, import_jsonl
from diptych.training.store import Store


def many_lines(source: Store, path: Path, count: int) -> Path:
    """A preference file of ``count`` distinct votes, made from one exported vote."""
    sample = path.with_suffix(".one")
    export_jsonl(source, sample)
    line = json.loads(sample.read_text().splitlines()[0])
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps(line | {"vote_uid": f"v{i:08d}", "conversation_uid": f"c{i:08d}"}) + "\n")
    return path


def test_a_vote_goes_through_while_a_large_import_runs(tmp_path):
    home = tmp_path / "home"
    db = paths.db_path(home)
    with Store(db) as store:
        record_sample_vote(store)
        big = many_lines(store, tmp_path / "big.jsonl", 10_000)
    importer = subprocess.Popen([sys.executable, "-m", "diptych", "--data-dir", str(home),
                                 "data", "import", str(big)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    votes = []
    with Store(db) as store:
        # Far less patience than the app's 10 s: the import may hold the lock only briefly.
        store.db.execute("PRAGMA busy_timeout = 1000")  # the old import held it 2.6 s
        while importer.poll() is None:
            votes.append(record_sample_vote(store))
        out, err = importer.communicate()
        assert importer.returncode == 0, err
        assert len(votes) > 10  # the import ran long enough for the test to mean something
        assert store.db.execute("SELECT count(*) FROM votes").fetchone()[0] == 1 + len(votes) + 10_000
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_staged_import_is_all_or_nothing_against_the_store(tmp_path):
    with Store(tmp_path / "a.sqlite") as source:
        record_sample_vote(source, prompt="What is 2+2?")
        record_sample_vote(source, "better", better_text="Four.")
        export_jsonl(source, tmp_path / "votes.jsonl")
    lines = (tmp_path / "votes.jsonl").read_text().splitlines()
    edited = json.loads(lines[0])  # a new vote in a conversation the store will hold ...
    edited["vote_uid"] = "another"
    edited["prompt"][-1]["content"] = "What is 3+3?"  # ... whose first message differs
    with Store(tmp_path / "b.sqlite") as target:
        assert import_jsonl(target, tmp_path / "votes.jsonl") == 3
        before = target.db.execute("SELECT count(*) FROM responses").fetchone()[0]
        (tmp_path / "clash.jsonl").write_text(json.dumps(edited) + "\n")
        with pytest.raises(UserError, match="line 1: .*different user message"):
            import_jsonl(target, tmp_path / "clash.jsonl")
        assert target.db.execute("SELECT count(*) FROM responses").fetchone()[0] == before
        assert target.db.execute("PRAGMA database_list").fetchall()[-1][1] != "stage"


def test_a_read_only_data_dir_is_read_and_writes_are_one_line(tmp_path, capsys):
    home = tmp_path / "home"
    with Store(paths.db_path(home)) as store:
        record_sample_vote(store, "left")
        record_sample_vote(store, "right")
    before = paths.db_path(home).read_bytes()
    with read_only(home):
        assert cli.main(["--data-dir", str(home), "data", "stats"]) == 0
        assert "2 votes" in capsys.readouterr().out
        assert cli.main(["--data-dir", str(home), "data", "export", "--out", str(tmp_path / "out.jsonl")]) == 0
        capsys.readouterr()
        assert cli.main(["--data-dir", str(home), "data", "import", str(tmp_path / "out.jsonl")]) == 2
        assert "read-only" in capsys.readouterr().err
    assert paths.db_path(home).read_bytes() == before
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_a_user_error_is_one_line_and_a_bug_says_so(data_dir, monkeypatch, capsys):
    def refuse(store, args):
        raise UserError("this file cannot be used:\n  it is empty")

    def crash(store, args):
        raise KeyError("oops")

    import diptych.commands.data as data

    monkeypatch.setattr(data, "_stats", refuse)
    assert cli.main(["data", "stats"]) == 2
    assert capsys.readouterr().err == "diptych: error: this file cannot be used: it is empty\n"
    monkeypatch.setattr(data, "_stats", crash)
    assert cli.main(["data", "stats"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err and "this is a bug in Diptych" in err


@contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder``: a disk that fills up."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here to fill a disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


def test_a_full_disk_during_a_job_is_one_line_and_keeps_nothing(voted, tmp_path):
    with small_disk(tmp_path / "full", "1m") as home:
        shutil.copy(paths.db_path(voted), paths.db_path(home))
        job = subprocess.run(
            [sys.executable, "-m", "diptych", "--data-dir", str(home), "train", "dpo", "--name", "x",
             "--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1",
             "--no-drift", "--progress", "jsonl"], capture_output=True, text=True)
        assert job.returncode == 2, job.stderr[-2000:]
        error = [json.loads(line) for line in job.stdout.splitlines()][-1]
        assert error["phase"] == "error" and "no space left" in error["error"]
        assert "Traceback" not in job.stderr
        assert list((home / "adapters").iterdir()) == []
