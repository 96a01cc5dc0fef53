"""Hardening: cancelling a job mid-measurement, jobs offline, damaged meta.json, folders that
are not GGUF LoRAs, numbers out of range, and an export that is written whole or not at all."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import tiny_models
from helpers import finish, write_random_lora

from diptych import paths
from diptych.cli import main
from diptych.models import adapters, scoring
from diptych.models.engine import Engine, SamplingError, SamplingParams

TINY_DPO = ["--steps", "1", "--batch-size", "2", "--max-length", "48", "--eval-size", "1"]


def usage_error(capsys, argv) -> str:
    """The one error line argparse printed for ``argv`` (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1]


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err.strip()


# -- 1. cancel during the drift phase ------------------------------------------------


class Interrupted(BaseException):
    """Stands in for a job's Cancelled: a BaseException a signal handler raises."""


def test_an_interrupt_while_waiting_on_the_kl_threads_waits_for_them(bundled_model, monkeypatch):
    """The interrupt lands while a worker thread is inside a chunk generator: it must come
    out as itself (not "generator already executing"), and both engines must work after."""
    base, tuned = Engine(bundled_model, n_ctx=256), Engine(bundled_model, n_ctx=256)
    real_chunks = scoring._logit_chunks

    def slow_chunks(*args, **kwargs):
        for item in real_chunks(*args, **kwargs):
            time.sleep(0.5)  # the worker is still inside the generator when the alarm fires
            yield item

    def interrupt(signum, frame):
        raise Interrupted()

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = tuned.tokenize("The capital of France is Paris.")
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        monkeypatch.setattr(scoring, "_logit_chunks", slow_chunks)
        signal.setitimer(signal.ITIMER_REAL, 0.15)
        with pytest.raises(Interrupted):
            scoring.kl_per_token(base, tuned, messages, answer)
        monkeypatch.setattr(scoring, "_logit_chunks", real_chunks)
        kl = scoring.kl_per_token(base, tuned, messages, answer)  # guards released, contexts sane
        assert len(kl) == len(answer) and abs(kl).max() < 1e-6  # no adapter: no drift
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        base.close()
        tuned.close()


# Runs ``diptych`` with the KL workers slowed from the second drift prompt on, and a marker
# file made when a worker is inside its chunk generator: a SIGTERM sent then lands while
# the main thread waits on the workers, every time, not only when the timing happens to.
SLOW_KL = textwrap.dedent("""
    import pathlib, sys, time
    from diptych.models import scoring

    marker, calls, real = pathlib.Path(sys.argv[1]), [], scoring._logit_chunks

    def slow_chunks(*args, **kwargs):
        calls.append(1)
        for item in real(*args, **kwargs):
            if len(calls) > 2:  # two per prompt (base, tuned): the first prompt runs as is
                marker.touch()
                time.sleep(2)
            yield item

    scoring._logit_chunks = slow_chunks
    sys.argv = ["diptych", *sys.argv[2:]]
    from diptych.cli import main
    sys.exit(main())
""")


def test_sigterm_during_the_drift_phase_cancels_cleanly(voted, tmp_path):
    marker = tmp_path / "inside-kl"
    log = tempfile.TemporaryFile("w+")
    tiny = tiny_models.build("llama", tmp_path / "tiny.gguf")  # the phase, not the model, is tested
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_KL, str(marker), "--data-dir", str(voted), "train", "dpo",
         "--model", str(tiny), "--name", "cut", "--data", str(voted / "pairs.jsonl"), *TINY_DPO,
         "--progress", "jsonl"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    process.log = log
    lines = []
    for raw in process.stdout:
        lines.append(json.loads(raw))
        if lines[-1]["phase"] == "drift":
            break
        assert lines[-1]["phase"] not in ("done", "error"), lines[-1]
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the second drift prompt never reached its KL pass"
    process.send_signal(signal.SIGTERM)
    code, rest, err = finish(process)
    lines += rest
    assert [line["phase"] for line in lines][-1] == "cancelled", (lines[-3:], err[-3000:])
    assert "generator already executing" not in err
    assert code == 128 + signal.SIGTERM, err[-3000:]
    root = paths.adapters_dir(voted)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".partial-")]
    assert not (root / "cut").exists()


# -- 2. jobs stay offline ------------------------------------------------------------

# Covered by the README test: every command it runs is watched by an audit hook
# (conftest.OFFLINE) for connections to any host, in a user's environment.


# -- 3. a meta.json of the wrong shape -----------------------------------------------


def damaged_adapters(data_dir, lora):
    root = paths.adapters_dir(data_dir)
    for name, meta in {
        "listy": "[1, 2]",
        "typed": json.dumps({"kind": 3, "created_at": 5, "metrics": [1], "base": "gemma",
                             "drift": {"held_out": "far", "recent": {"kl": "0.1"}}}),
        "nested": json.dumps({"kind": "dpo", "metrics": {"before": 1, "after": {"reward": "x"}},
                              "drift": [0.2], "created_at": "2025-01-01T00:00:00+00:00"}),
        "cut": '{"kind": "dpo", "metr',
        "sound": json.dumps({"kind": "dpo", "created_at": "2025-02-01T00:00:00+00:00",
                             "metrics": {"after": {"reward": 0.5}}, "drift": {"held_out": {"kl": 0.25}}}),
    }.items():
        (root / name).mkdir()
        (root / name / adapters.META_NAME).write_text(meta, encoding="utf-8")
        (root / name / adapters.GGUF_NAME).write_bytes(lora.read_bytes())
    return root


def test_adapters_list_survives_meta_json_of_any_shape(data_dir, bundled_model, tmp_path, capsys):
    damaged_adapters(data_dir, write_random_lora(tmp_path / "r.gguf", bundled_model))
    found = {a.name: a for a in adapters.list_adapters(data_dir)}
    assert set(found) == {"listy", "typed", "nested", "cut", "sound"}
    assert found["sound"].problem is None and adapters.key_metric(found["sound"]) == "reward 0.50, KL 0.250"
    for name in ("listy", "typed", "nested", "cut"):
        info = found[name]
        assert info.problem and "\n" not in info.problem and "meta.json" in info.problem
        assert isinstance(info.kind, str) and isinstance(info.created_at, str)
        adapters.describe(info), adapters.key_metric(info), adapters.drift_kl(info)  # none raises
    assert "holds a list" in found["listy"].problem
    assert "'kind' is a number" in found["typed"].problem
    assert "not valid JSON" in found["cut"].problem

    assert main(["--data-dir", str(data_dir), "adapters", "list"]) == 0
    out = capsys.readouterr().out
    assert "listy" in out and "damaged: meta.json holds a list" in out
    assert main(["--data-dir", str(data_dir), "adapters", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["sound"]["problem"] is None and "not valid JSON" in rows["cut"]["problem"]


def test_a_damaged_meta_json_is_not_overwritten(data_dir, bundled_model, tmp_path):
    root = damaged_adapters(data_dir, write_random_lora(tmp_path / "r.gguf", bundled_model))
    with pytest.raises(adapters.AdapterError, match="holds a list"):
        adapters.record_drift(adapters.resolve("listy", data_dir), {"held_out": {"kl": 1.0}})
    assert (root / "listy" / adapters.META_NAME).read_text() == "[1, 2]"
    info = adapters.rename("listy", "listed", data_dir)
    assert info.problem and (root / "listed" / adapters.META_NAME).read_text() == "[1, 2]"
    # a readable object with one bad field takes the measurement, in place of the bad field
    info = adapters.record_drift(adapters.resolve("nested", data_dir), {"held_out": {"kl": 0.5}})
    assert adapters.drift_kl(info) == 0.5


def test_the_app_starts_with_damaged_adapters(qtbot, data_dir, bundled_model, tmp_path):
    from diptych.desktop.app import build_window

    damaged_adapters(data_dir, write_random_lora(tmp_path / "r.gguf", bundled_model))
    window = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.controller.engines) == 2, timeout=30_000)
    picker = [window.adapter_picker.itemText(i) for i in range(window.adapter_picker.count())]
    assert any(text.startswith("listy ·") and "damaged" in text for text in picker), picker


# -- 4. a folder without a GGUF LoRA -------------------------------------------------


def reward_model(data_dir, name="judge"):
    folder = paths.adapters_dir(data_dir) / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    (folder / adapters.META_NAME).write_text(json.dumps({"kind": "reward"}))
    return folder


def test_chat_refuses_a_folder_without_a_gguf_lora(data_dir, tmp_path, capsys):
    plain = tmp_path / "not-an-adapter"
    plain.mkdir()
    assert main(["--data-dir", str(data_dir), "--adapter", str(plain), "chat", "--prompt", "hi",
                 "--max-tokens", "2"]) == 2
    err = one_line(capsys.readouterr().err)
    assert str(plain) in err and adapters.GGUF_NAME in err

    folder = reward_model(data_dir)
    assert main(["--data-dir", str(data_dir), "--adapter", "judge", "chat", "--prompt", "hi",
                 "--max-tokens", "2"]) == 2
    err = one_line(capsys.readouterr().err)
    assert str(folder) in err and "reward model" in err and "llama.cpp cannot run it" in err


def test_score_and_the_app_refuse_a_reward_model(data_dir, capsys, monkeypatch):
    import diptych.desktop.app

    reward_model(data_dir)
    assert main(["--data-dir", str(data_dir), "score", "--adapter", "judge", "--prompt", "hi",
                 "--response", "Hello."]) == 2
    assert "reward model" in one_line(capsys.readouterr().err)
    monkeypatch.setattr(diptych.desktop.app, "run_app",
                        lambda args: pytest.fail("the app opened the base as the tuned model"))
    assert main(["--data-dir", str(data_dir), "--adapter", "judge"]) == 2
    assert "reward model" in one_line(capsys.readouterr().err)


# -- 5. numbers out of range ---------------------------------------------------------


@pytest.mark.parametrize("argv, option", [
    (["chat", "--prompt", "hi", "--max-tokens", "0"], "--max-tokens"),
    (["chat", "--prompt", "hi", "--max-tokens", "-1"], "--max-tokens"),
    (["chat", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
    (["chat", "--prompt", "hi", "--temperature", "nan"], "--temperature"),
    (["chat", "--prompt", "hi", "--temperature", "inf"], "--temperature"),
    (["chat", "--prompt", "hi", "--seed", "-1"], "--seed"),
    (["chat", "--prompt", "hi", "--seed", str(2**32 - 1)], "--seed"),  # llama.cpp's "random"
    (["chat", "--prompt", "hi", "--seed", str(2**32)], "--seed"),
    (["score", "--adapter", "x", "--prompt", "hi", "--response", "a", "--top", "-1"], "--top"),
    (["adapters", "drift", "x", "--max-tokens", "0"], "--max-tokens"),
    (["adapters", "drift", "x", "--max-tokens", "-1"], "--max-tokens"),
])
def test_numbers_out_of_range_are_usage_errors(argv, option, capsys, data_dir):
    line = usage_error(capsys, argv)
    assert f"error: argument {option}:" in line


def test_drift_with_a_bad_max_tokens_keeps_the_stored_drift(data_dir, bundled_model, tmp_path, capsys):
    root = damaged_adapters(data_dir, write_random_lora(tmp_path / "r.gguf", bundled_model))
    before = (root / "sound" / adapters.META_NAME).read_text()
    usage_error(capsys, ["--data-dir", str(data_dir), "adapters", "drift", "sound", "--max-tokens", "-1"])
    assert (root / "sound" / adapters.META_NAME).read_text() == before


def test_the_edges_of_the_ranges_are_accepted():
    from diptych.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["chat", "--prompt", "hi", "--max-tokens", "1", "--seed", "0",
                              "--temperature", "0"])
    assert (args.max_tokens, args.seed, args.temperature) == (1, 0, 0.0)
    assert parser.parse_args(["chat", "--prompt", "hi", "--seed", str(2**32 - 2)]).seed == 2**32 - 2
    SamplingParams(temperature=0, top_p=1, top_k=0, min_p=0, max_tokens=1, seed=2**32 - 2)


@pytest.mark.parametrize("field, value", [
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 2.5), ("temperature", -1.0),
    ("temperature", float("nan")), ("temperature", float("inf")), ("seed", -1), ("seed", 2**32),
    ("seed", 2**32 - 1), ("top_p", 1.5), ("min_p", -0.1), ("top_k", -1), ("repeat_penalty", 0.0),
    ("stop", "abc"),
])
def test_sampling_params_check_their_fields(field, value):
    with pytest.raises(SamplingError, match=f"sampling parameter {field} must be") as exc_info:
        SamplingParams(**{field: value})
    assert isinstance(exc_info.value, ValueError) and "\n" not in str(exc_info.value)


def test_sampling_params_set_afterwards_are_checked_before_an_answer(bundled_model):
    engine = Engine(bundled_model, n_ctx=256)
    try:
        params = SamplingParams(max_tokens=4)
        params.max_tokens = 0
        with pytest.raises(SamplingError, match="max_tokens"):
            engine.generate("Hello", params)
        params.max_tokens = 2
        assert engine.generate("Hello", params).n_tokens <= 2  # the engine is still free
    finally:
        engine.close()


# -- 6. the export is atomic ---------------------------------------------------------


def test_export_replaces_the_file_whole(home, tmp_path, capsys):
    out = tmp_path / "votes.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    inode = out.stat().st_ino
    assert main(["--data-dir", str(home), "data", "export", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3
    assert out.stat().st_ino != inode  # a new file renamed into place, not the old one truncated
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_export_leaves_the_old_file_and_no_temporary(home, tmp_path, capsys, monkeypatch):
    out = tmp_path / "votes.jsonl"
    out.write_text("old\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    assert main(["--data-dir", str(home), "data", "export", "--out", str(out)]) == 2
    assert "No space left" in one_line(capsys.readouterr().err)
    assert out.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "votes.jsonl" and p.name != "home"]


@pytest.mark.parametrize("target", ["/dev/null", "folder"])
def test_export_refuses_a_target_that_is_not_a_regular_file(home, tmp_path, capsys, target):
    if target == "folder":
        target = str(tmp_path / "folder")
        os.mkdir(target)
    elif not os.path.exists(target):
        pytest.skip(f"no {target} here")
    assert main(["--data-dir", str(home), "data", "export", "--out", target]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("diptych: error:") and target in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_window_built_with_a_reward_model_says_so_and_runs_no_adapter(qtbot, data_dir):
    import argparse

    from diptych.desktop.app import build_window

    reward_model(data_dir)
    window = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter="judge"))
    qtbot.addWidget(window)
    assert "reward model" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: len(window.controller.engines) == 2, timeout=30_000)
    assert window.controller.engines["tuned"].adapter_path is None
