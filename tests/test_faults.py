"""What a fault campaign found: crafted GGUF headers and templates, rewards that exit, crash
or never return, damaged adapters and special files. Each gets one line (``diptych:
error: ...``, exit status 2) or the documented behaviour."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import patched_copy, write_random_lora, write_small_gguf

from diptych import paths
from diptych.cli import main
from diptych.models import adapters, catalog
from diptych.training.examples import load_labels, load_pairs
from diptych.training.errors import JobError


def error_line(capsys, argv, code: int = 2) -> str:
    """The one line ``diptych ARGV`` printed on stderr, in the one error format."""
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diptych: error: "), err
    return err.strip()


# -- 1. float hyperparameters llama.cpp asserts on ----------------------------------------

EPSILON = "gemma3.attention.layer_norm_rms_epsilon"


@pytest.mark.parametrize("key, value", [(EPSILON, math.nan), (EPSILON, -1.0),
                                        (EPSILON, math.inf), ("gemma3.rope.freq_base", math.inf),
                                        ("gemma3.rope.freq_base", 0.0)])
def test_a_bad_float_in_the_bundled_header_is_refused_before_llama_cpp(bundled_model, tmp_path,
                                                                      key, value):
    path = patched_copy(bundled_model, tmp_path / "crafted.gguf", key, value)
    with pytest.raises(catalog.ModelFileError, match=f"{key} is {value!r}, not a finite number"):
        catalog.read_info(path)


def test_chat_on_a_nan_epsilon_is_one_line_not_an_abort(bundled_model, tmp_path, data_dir):
    path = patched_copy(bundled_model, tmp_path / "nan.gguf", EPSILON, math.nan)
    result = subprocess.run([sys.executable, "-m", "diptych", "chat", "--model", str(path),
                             "--prompt", "Hi", "--max-tokens", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"diptych: error: nan.gguf is a damaged or crafted GGUF file: {EPSILON} is nan, "
        "not a finite number 0 or more"]


# -- 5. chat templates llama.cpp's binding compiles as it loads --------------------------


@pytest.mark.parametrize("template, problem", [
    ("{{ 'A' * 2000000000 }}", "a repeated string of 2,000,000,000 characters"),
    ("{% for %}", "does not parse"),
])
def test_a_template_that_hangs_or_breaks_the_load_is_one_line(tmp_path, data_dir, capsys,
                                                              template, problem):
    path = write_small_gguf(tmp_path / "templated.gguf", template=template)
    started = time.monotonic()
    line = error_line(capsys, ["chat", "--model", path, "--prompt", "Hi", "--max-tokens", "1"])
    assert time.monotonic() - started < 5
    assert "templated.gguf cannot be used: its chat template" in line and problem in line


# -- 2 and 3. a reward that exits, crashes, overflows or never returns ----------------------

REWARDS = """
import ctypes, os, sys, time

def fine(prompts, completions, **kwargs):
    return [len(c[-1]["content"]) / 10 for c in completions]

def exits(prompts, completions, **kwargs):
    sys.exit(0)

def leaves(prompts, completions, **kwargs):
    os._exit(0)

def interrupted(prompts, completions, **kwargs):
    raise KeyboardInterrupt

def huge(prompts, completions, **kwargs):
    return [10**400 for _ in completions]

def crashes(prompts, completions, **kwargs):
    ctypes.string_at(0)

def spins(prompts, completions, **kwargs):
    while True:
        pass
"""
PROMPTS = [[{"role": "user", "content": "Hi"}]] * 2
ANSWERS = [[{"role": "assistant", "content": "Hello."}], [{"role": "assistant", "content": "Hi."}]]


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS)
    return path


@pytest.mark.parametrize("name, message", [
    ("exits", "rewards.py:8 (exits): the reward raised SystemExit: 0"),
    ("leaves", "rewards.py: the reward ended the process it runs in (it exited with status 0"),
    ("interrupted", "rewards.py:14 (interrupted): the reward raised KeyboardInterrupt"),
    ("huge", "rewards.py:huge: the reward for answer 1 is 1000000000"),
    ("crashes", "rewards.py: the reward ended the process it runs in (it was killed by SIGSEGV"),
])
def test_a_reward_that_exits_or_crashes_is_one_line_naming_the_file(reward_file, name, message):
    from diptych.training import reward_process

    fine = reward_process.load_function(f"{reward_file}:fine")
    assert fine(PROMPTS, ANSWERS, trainer_state=None, log_metric=print) == [0.6, 0.3]
    reward = reward_process.load_function(f"{reward_file}:{name}")
    with pytest.raises(JobError) as caught:
        reward(PROMPTS, ANSWERS)
    assert str(caught.value).startswith(str(reward_file.parent)) and message in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_reward_that_never_returns_is_stopped_at_its_time_limit(reward_file):
    from diptych.training import reward_process

    reward = reward_process.load_function(f"{reward_file}:spins", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(JobError, match=r"rewards.py: the reward took more than 0.5 s for 2 answers"):
        reward(PROMPTS, ANSWERS)
    assert time.monotonic() - started < 5
    assert not reward._process.is_alive()


class Interrupted(BaseException):
    """Stands in for a job's Cancelled, raised by the SIGTERM handler."""


def test_cancel_stops_a_reward_that_never_returns(reward_file):
    from diptych.training import reward_process

    reward = reward_process.load_function(f"{reward_file}:spins")  # the default: a minute

    def interrupt(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            reward(PROMPTS, ANSWERS)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 5
    reward.close()
    assert not reward._process.is_alive()


def test_the_dry_run_of_a_reward_that_exits_fails_with_one_line(reward_file, data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "diptych", "train", "grpo", "--dry-run", "--reward-fn",
         f"{reward_file}:leaves", "--max-completion-length", "2", "--num-generations", "2",
         "--reward-timeout", "30", "--progress", "jsonl"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [json.loads(line) for line in result.stdout.splitlines()][-1]
    assert error["phase"] == "error" and "ended the process it runs in" in error["error"]
    assert result.stderr.strip().splitlines()[-1].startswith("diptych: error: ")


# -- 4. a meta.json nested beyond the parser's depth ---------------------------------------


def test_a_deeply_nested_meta_json_is_listed_as_damaged(data_dir, bundled_model, tmp_path, capsys):
    root = paths.adapters_dir(data_dir)
    for name in ("deep", "sound"):
        (root / name).mkdir()
        write_random_lora(root / name / adapters.GGUF_NAME, bundled_model)
    (root / "deep" / adapters.META_NAME).write_text("[" * 200_000 + "]" * 200_000)
    (root / "sound" / adapters.META_NAME).write_text(json.dumps({"kind": "dpo"}))
    assert main(["--data-dir", str(data_dir), "adapters", "list"]) == 0
    out = capsys.readouterr().out
    assert "deep" in out and "damaged: meta.json nests too deeply" in out and "sound" in out
    assert main(["--data-dir", str(data_dir), "adapters", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "nests too deeply" in rows["deep"]["problem"] and rows["sound"]["problem"] is None


# -- 9. names ending in a newline ----------------------------------------------------------


@pytest.mark.parametrize("name", ["nl\n", "a\n", "v1\r\n"])
def test_a_name_ending_in_a_newline_is_refused(data_dir, bundled_model, tmp_path, capsys, name):
    folder = paths.adapters_dir(data_dir) / "v1"
    folder.mkdir()
    write_random_lora(folder / adapters.GGUF_NAME, bundled_model)
    with pytest.raises(adapters.AdapterError, match="not a valid adapter name"):
        adapters.check_name(name)
    line = error_line(capsys, ["--data-dir", data_dir, "adapters", "rename", "v1", name])
    assert "not a valid adapter name" in line
    assert sorted(p.name for p in paths.adapters_dir(data_dir).iterdir()) == ["v1"]
    with pytest.raises(adapters.AdapterError):
        adapters.resolve("v1\n", data_dir)


# -- 7. special files and endless lines ------------------------------------------------------


@pytest.fixture
def within_seconds():
    """Fail, rather than wait for ever, when a command runs past its time."""
    def interrupt(signum, frame):
        raise TimeoutError("still running")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 20)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_data_import_refuses_a_fifo_and_a_device(data_dir, tmp_path, capsys, within_seconds):
    fifo = tmp_path / "votes.jsonl"
    os.mkfifo(fifo)
    for special in (fifo, "/dev/zero", tmp_path):
        line = error_line(capsys, ["data", "import", special])
        assert f"{special}: not a regular file" in line


def test_data_import_refuses_a_line_longer_than_the_cap(data_dir, tmp_path, capsys, monkeypatch):
    from diptych.training import preferences

    monkeypatch.setattr(preferences, "MAX_LINE_BYTES", 1000)
    long = tmp_path / "long.jsonl"
    long.write_bytes(b"\n" + b"[" * 5000 + b"\n")
    line = error_line(capsys, ["data", "import", long])
    assert line == f"diptych: error: {long}: line 2: longer than 1,000 bytes"


# -- 8. tracebacks left ------------------------------------------------------------------


def test_data_import_of_a_lone_surrogate_is_one_line(home, tmp_path, capsys):
    out = tmp_path / "votes.jsonl"
    assert main(["--data-dir", str(home), "data", "export", "--out", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    first["chosen"][0]["content"] = "\ud800"
    out.write_text(json.dumps(first) + "\n")  # ensure_ascii: written as the escape "\ud800"
    capsys.readouterr()
    line = error_line(capsys, ["--data-dir", home, "data", "import", out])
    assert "line 1: a string holds a lone surrogate" in line


def test_prompts_from_a_binary_file_is_one_line(data_dir, tmp_path, capsys):
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(b"Say hi\n\xff\xfe\x00binary")
    line = error_line(capsys, ["train", "grpo", "--dry-run", "--prompts-from", binary,
                               "--task", "length"])
    assert f"{binary}: not UTF-8 text" in line


def test_a_read_only_data_folder_lists_nothing_and_a_job_is_one_line(tmp_path, capsys):
    from helpers import read_only

    home = tmp_path / "home"
    home.mkdir()
    with read_only(home):
        assert main(["--data-dir", str(home), "adapters", "list"]) == 0
        assert "no adapters yet" in capsys.readouterr().out
        line = error_line(capsys, ["--data-dir", home, "train", "dpo", "--name", "x"])
        assert line == (f"diptych: error: {home / 'adapters'}: the adapters folder cannot be "
                        "made (Read-only file system)")
    assert list(home.iterdir()) == []


# -- 6. a vote on an empty conversation ----------------------------------------------------


def test_an_empty_prompt_is_refused_by_the_store_and_left_out_by_the_loaders(tmp_path):
    from helpers import record_sample_vote

    from diptych.training import dpo, kto, unpaired
    from diptych.training.preferences import records
    from diptych.training.store import Store

    home = tmp_path / "home"
    with Store.open(home) as store:
        cid = store.new_conversation()
        with pytest.raises(ValueError, match="prompt_messages must be a non-empty list"):
            store.add_response(cid, 0, "left", "base", "Hi.", model=None, model_path=None,
                               model_hash=None, adapter=None, adapter_path=None,
                               adapter_scale=None, template_name=None, template_source=None,
                               params={}, prompt_messages=[], n_tokens=None, ttft_s=None,
                               tokens_per_s=None, finish_reason="stop")
        assert store.db.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
        record_sample_vote(store, "right", prompt="What is 2+2?")
        damaged = record_sample_vote(store, "left", prompt="What is 3+3?")
        # a row an older Diptych let in
        store.db.execute("UPDATE responses SET prompt_messages = '[]' WHERE id IN (SELECT "
                         "left_response_id FROM votes WHERE id = ?)", [damaged])
        assert [r["prompt"][-1]["content"] for r in records(store)] == ["What is 2+2?"]
        assert len(unpaired.records(store)) == 2
        assert [p[-1]["content"] for p in store.recent_prompts()] == ["What is 3+3?", "What is 2+2?"]
    pairs, data = load_pairs(dpo.Config(data_dir=str(home)))
    assert len(pairs) == 1 and data["source"] == "store (1 vote left out: an empty or damaged prompt)"
    examples, data = load_labels(kto.Config(data_dir=str(home)))
    assert len(examples) == 2 and "1 vote left out" in data["source"]


# -- 11. limits the model or the machine cannot honour -------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["train", "dpo", "--name", "x", "--lora-r", "100000"],
     "--lora-r 100,000 is more than gemma-3-270m-q4_k_m.gguf's width (640)"),
    (["train", "dpo", "--name", "x", "--max-length", "10000000"],
     "--max-length 10,000,000 is more than gemma-3-270m-q4_k_m.gguf's context of 32,768 tokens"),
    (["train", "kto", "--name", "x", "--steps", str(10**20)],
     "--steps 100,000,000,000,000,000,000 is more than 1,000,000: the job would not end"),
    (["train", "sft", "--name", "x", "--epochs", "1e20"], "--epochs 1e+20 is more than 10,000"),
    (["train", "grpo", "--dry-run", "--max-completion-length", "100000"],
     "--max-completion-length 100,000 is more than gemma-3-270m-q4_k_m.gguf's context"),
    (["chat", "--prompt", "Hi", "--max-tokens", "100000000"],
     "--max-tokens 100,000,000 is more than gemma-3-270m-q4_k_m.gguf can write: its context "
     "holds 4,096 tokens"),
    (["score", "--adapter", "x", "--prompt", "Hi", "--response", "Hello.", "--top", "1000000"],
     "argument --top: must be from 0 to 100, not 1000000"),
])
def test_limits_past_what_the_model_or_machine_can_honour_are_one_line(data_dir, capsys, argv,
                                                                       message):
    try:
        line = error_line(capsys, argv)
    except SystemExit as exc:  # argparse's own refusal
        assert exc.code == 2
        line = capsys.readouterr().err.strip()
    assert line.startswith("diptych: error: ") and message in line, line
    assert not (data_dir / "adapters").exists() or not list((data_dir / "adapters").iterdir())


# -- 10. --from a damaged adapter ----------------------------------------------------------


def damaged_parent(data_dir, name: str, r, cut: bool):
    import numpy as np
    from safetensors.numpy import save_file

    folder = paths.adapters_dir(data_dir) / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "target_modules": "all-linear"}))
    (folder / adapters.META_NAME).write_text(json.dumps({"kind": "dpo"}))
    weights = folder / "adapter_model.safetensors"
    save_file({"base_model.model.layers.0.lora_A.weight": np.zeros((16, 640), np.float32)}, weights)
    if cut:
        weights.write_bytes(weights.read_bytes()[:4000])
    return folder


@pytest.mark.parametrize("name, r, cut, message", [
    ("negative", -1, False, "--from negative: its adapter_config.json has r = -1, not a positive number"),
    ("cut", 16, True, "--from cut: cannot read"),
    ("other", 8, False, "--from other: its LoRA has r = 8, this job 16"),
])
def test_a_damaged_parent_is_refused_before_the_job_starts(voted, capsys, name, r, cut, message):
    damaged_parent(voted, name, r, cut)
    started = time.monotonic()
    line = error_line(capsys, ["--data-dir", voted, "train", "dpo", "--name", "next", "--from",
                               name, "--no-drift"])
    assert message in line
    assert time.monotonic() - started < 30  # torch's import, no data, no weights
    assert not (paths.adapters_dir(voted) / "next").exists()


# -- 2. the Train tab: a job that ends without its done line failed ----------------------


@pytest.mark.parametrize("trial", [False, True])
def test_the_train_tab_calls_a_job_without_its_done_line_a_failure(qtbot, data_dir, trial):
    from PySide6.QtCore import QProcess

    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(data_dir)
    qtbot.addWidget(panel)
    panel.monitor.trial = trial
    panel.handle_line('{"phase": "eval_before"}')
    panel._finished(0, QProcess.ExitStatus.NormalExit)
    assert "ended unexpectedly (exit code 0)" in panel.phase.text()
    assert panel.progress.format() == "failed"
    panel.handle_line('{"phase": "sample", "prompt": "Hi", "answer": "Hello", "rewards": {}, "reward": 1}')
    panel._finished(11, QProcess.ExitStatus.CrashExit)
    assert "it crashed (killed by a signal)" in panel.phase.text()


def test_an_os_error_is_one_line_without_its_errno(data_dir, capsys, monkeypatch):
    from helpers import read_only

    folder = paths.adapters_dir(data_dir) / "v1"
    folder.mkdir()
    (folder / adapters.META_NAME).write_text(json.dumps({"kind": "dpo"}))
    with read_only(data_dir):
        line = error_line(capsys, ["adapters", "rename", "v1", "v2"])
    assert line == f"diptych: error: {folder}: Read-only file system"
