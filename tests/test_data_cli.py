"""``diptych data``: stats, export and import from the command line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys


from diptych.cli import main
from diptych.training.store import Store


def diptych(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diptych", *args],
                          capture_output=True, text=True, timeout=60)


def test_stats_json_in_a_subprocess(home):
    done = diptych("--data-dir", str(home), "data", "stats", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["pairs"] == 3 and report["counts"]["tie"] == 1
    assert report["adapters"][0]["adapter"] == "v1"


def test_bad_import_file_exits_2_and_changes_nothing(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": []}\n', encoding="utf-8")
    done = diptych("--data-dir", str(home), "data", "import", str(bad))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "line 1:" in done.stderr
    with Store.open(home) as store:
        assert store.pair_counts()["votes"] == 3


def test_export_then_import_elsewhere(home, tmp_path, capsys, monkeypatch):
    assert main(["--data-dir", str(home), "data", "export"]) == 0
    stdout = capsys.readouterr().out
    assert len(stdout.splitlines()) == 3  # right, better x2
    out = tmp_path / "votes.jsonl"
    assert main(["--data-dir", str(home), "data", "export", "--out", str(out),
                 "--include-ties"]) == 0
    assert "exported 4 records" in capsys.readouterr().err
    monkeypatch.setenv("DIPTYCH_HOME", str(tmp_path / "other"))
    assert main(["data", "import", str(out)]) == 0
    assert "imported 4 records" in capsys.readouterr().err
    assert main(["data", "stats"]) == 0
    text = capsys.readouterr().out
    assert "3 votes" in text and "v1" in text


def test_newer_database_exits_2(home, capsys):
    conn = sqlite3.connect(home / "diptych.sqlite")
    with conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('diptych', 'm999_later', '2031-01-01')")
    conn.close()
    assert main(["--data-dir", str(home), "data", "stats"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "newer version of Diptych" in err


def test_stats_show_each_version_against_its_parent(home, capsys):
    from helpers import record_sample_vote

    for name, parent in (("v1", None), ("v2", "v1")):
        folder = home / "adapters" / name
        folder.mkdir(parents=True)
        meta = {"name": name, "kind": "dpo", "created_at": "2026-11-30T10:00:00+00:00"}
        if parent:
            meta["parent"] = {"name": parent, "created_at": "2026-11-30T10:00:00+00:00"}
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with Store.open(home) as store:
        for choice in ("left", "left", "right"):
            record_sample_vote(store, choice, left="v2", right="v1")
    assert main(["--data-dir", str(home), "data", "stats"]) == 0
    out = capsys.readouterr().out
    table = out.split("version vs parent", 1)[1].splitlines()
    assert table[1].split() == ["v2", "2", "1", "0", "67%", "(21%-94%)", "v1"]
    assert main(["--data-dir", str(home), "data", "stats", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["versus_parent"]
    assert (row["adapter"], row["parent"], row["wins"], row["losses"]) == ("v2", "v1", 2, 1)
