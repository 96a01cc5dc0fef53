"""KTO on every vote: a real job on a store holding all four vote kinds and written
answers, and TRL's unpaired format exported and imported beside the pair format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tiny_models
from every_vote import VOTES, fill
from helpers import run_job, steps

from diptych.training.examples import load_labels
from diptych.training import kto
from diptych.training.preferences import ImportFormatError
from diptych.training.store import Store

TINY = ["--steps", "2", "--batch-size", "4", "--max-length", "64", "--eval-size", "2", "--no-drift"]


@pytest.fixture
def every_vote(data_dir, weights_cache):
    with Store.open(data_dir) as store:
        fill(store)
    return data_dir


def test_kto_learns_from_every_kind_of_vote(every_vote, tmp_path):
    # a tiny random-weight model: what is tested is which votes become labels, and the run
    tiny = tiny_models.build("llama", tmp_path / "tiny.gguf")
    lines, info = run_job(every_vote, "kto", "--name", "labels", "--model", str(tiny), "--lr", "1e-3", *TINY)
    assert [s["step"] for s in steps(lines)] == [1, 2]
    assert all(s["kl"] is not None for s in steps(lines))  # KTO's own KL estimate, plotted live
    data = info.meta["data"]
    # 2 left + 2 right votes: 4 winners, 4 losers; both-bad: 2 losers; 2 written answers; tie: none
    assert (data["examples"], data["desirable"], data["undesirable"]) == (12, 6, 6)
    assert data["ties"] == "skip" and data["eval"] == 2 and data["held_out"]
    assert data["desirable_weight"] >= 1 and data["undesirable_weight"] >= 1
    before, after = info.meta["metrics"]["before"], info.meta["metrics"]["after"]
    assert before["kl"] == 0 and after["kl"] > 0 and after["n"] == 2
    assert info.gguf_path.is_file() and info.meta["kind"] == "kto"


def test_ties_and_weights(every_vote):
    examples, data = load_labels(kto.Config(data_dir=str(every_vote), ties="desirable"))
    assert (data["desirable"], data["undesirable"]) == (8, 6)  # the tie: both answers desirable
    assert kto.weights(8, 6) == (1.0, 1.333) and kto.weights(2, 6) == (3.0, 1.0)
    assert kto.weights(0, 6) == (1.0, 1.0)


def run_cli(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "diptych", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=120)


def test_unpaired_export_and_import_round_trip(every_vote, tmp_path):
    out = tmp_path / "labels.jsonl"
    done = run_cli(every_vote, "data", "export", "--format", "unpaired", "--out", str(out))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and {"prompt", "completion", "label"} <= set(records[0])
    written = [r for r in records if r["side"] == "written"]
    assert [r["completion"][0]["content"] for r in written] == [v[4] for v in VOTES if v[4]]
    assert all(len(r["shown"]) == 2 and r["label"] for r in written)
    with_ties = run_cli(every_vote, "data", "export", "--format", "unpaired", "--ties", "desirable")
    assert len(with_ties.stdout.splitlines()) == 14

    other = tmp_path / "other"
    assert run_cli(other, "data", "import", str(out)).returncode == 0
    again = tmp_path / "again.jsonl"
    run_cli(other, "data", "export", "--format", "unpaired", "--out", str(again))
    assert again.read_bytes() == out.read_bytes()  # every exported vote came back as it was

    # a KTO job reads the file as it reads the store
    examples, data = load_labels(kto.Config(data=str(out)))
    assert (data["examples"], data["desirable"]) == (12, 6)


def test_bad_unpaired_files_change_nothing(every_vote, tmp_path):
    out = tmp_path / "labels.jsonl"
    run_cli(every_vote, "data", "export", "--format", "unpaired", "--out", str(out))
    good = out.read_text().splitlines()
    bare = json.dumps({"prompt": [{"role": "user", "content": "Hi?"}],
                       "completion": [{"role": "assistant", "content": "Hello."}], "label": True})
    cases = [
        ([good[0]], "line 1: vote", "needs one line for each side"),  # a winner without its loser
        (good[:4] + [bare], "line 5:", "a bare unpaired line"),
        (good[:2] + [good[2].replace('"label": true', '"label": "yes"')], "line 3:", "'label' must be"),
        (good[:2] + ['{"prompt": [], "completion": [], "label": true}'], "line 3:", "non-empty list"),
    ]
    other = tmp_path / "other"
    for lines, where, problem in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join(lines) + "\n")
        done = run_cli(other, "data", "import", str(path))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert where in done.stderr and problem in done.stderr
    with Store.open(other) as store:
        assert store.pair_counts()["votes"] == 0
    with pytest.raises(ImportFormatError, match="line 3: 'label' must be"):  # a job refuses it too
        path = tmp_path / "bad-label.jsonl"
        path.write_text("\n".join(cases[2][0]) + "\n")
        load_labels(kto.Config(data=str(path)))
