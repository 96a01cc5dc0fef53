"""Loading llama.cpp safely on the CPU at hand: extra weight buffers off where AMX is, a
check in a child process that survives a native crash, and its outcome remembered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from diptych.models import native
from diptych.models.errors import UserError

AMX_REPORT = ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | "
              "AMX_INT8 = 1 | LLAMAFILE = 1 | REPACK = 1 | ")
EPYC_REPORT = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 | REPACK = 1 | "
SEGFAULT = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


def test_a_cpu_that_reports_amx_loads_without_extra_buffers():
    amx = native.cpu_features(AMX_REPORT)
    assert "AMX_INT8" in amx and "AVX512" in amx and "AVX512_BF16" in amx
    assert native.extra_buffers_default(amx, environ={}) is False
    epyc = native.cpu_features(EPYC_REPORT)
    assert "AVX512" not in epyc and "AVX2" in epyc
    assert native.extra_buffers_default(epyc, environ={}) is True


def test_the_variable_overrides_the_choice_and_a_bad_value_is_one_line():
    amx = native.cpu_features(AMX_REPORT)
    assert native.extra_buffers_default(amx, environ={native.ENV_VAR: "1"}) is True
    assert native.extra_buffers_default(native.cpu_features(EPYC_REPORT),
                                        environ={native.ENV_VAR: "0"}) is False
    with pytest.raises(UserError, match=f"^{native.ENV_VAR} must be 0 or 1, not 'yes'$"):
        native.extra_buffers_default(amx, environ={native.ENV_VAR: "yes"})


@pytest.fixture
def fresh_model(tmp_path, bundled_model, monkeypatch):
    """The bundled model under a path this process has not decided on, and an empty
    cache of checks."""
    monkeypatch.setattr(native, "checks_dir", lambda: tmp_path / "checks")
    path = tmp_path / "model.gguf"
    try:
        os.link(bundled_model, path)
    except OSError:
        shutil.copy(bundled_model, path)
    return path


real_features = native.cpu_features


def test_a_segfault_with_extra_buffers_is_retried_safely_and_remembered(fresh_model, monkeypatch):
    monkeypatch.setattr(native, "cpu_features", lambda report=None: real_features(EPYC_REPORT))
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    real = native.probe_command
    tried = []

    def probe(path, extra):
        tried.append(extra)
        return SEGFAULT if extra else real(path, extra)

    monkeypatch.setattr(native, "probe_command", probe)
    assert native.extra_buffers_for(fresh_model) is False
    assert tried == [True, False]
    (record,) = [json.loads(f.read_text()) for f in (fresh_model.parent / "checks").iterdir()]
    assert record["crashes"] == {"1": "SIGSEGV"} and record["extra_buffers"] is False
    assert record["key"]["cpu"] == real_features(EPYC_REPORT)

    # a later launch (a fresh process: another path for the same file) reads the outcome
    other = fresh_model.with_name("again.gguf")
    os.link(fresh_model, other)
    monkeypatch.setattr(native, "probe_command", lambda *a: pytest.fail("checked again"))
    assert native.extra_buffers_for(other) is False
    # and the safe choice loads and answers in this process
    llama = native.llama(other, n_ctx=64, n_threads=1, verbose=False)
    try:
        assert llama.create_completion("The sky is", max_tokens=2, temperature=0)["choices"]
    finally:
        llama.close()


def test_a_crash_either_way_is_one_line_naming_model_and_cpu(fresh_model, monkeypatch, capsys):
    monkeypatch.setattr(native, "cpu_features", lambda report=None: real_features(EPYC_REPORT))
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.setattr(native, "probe_command", lambda path, extra: SEGFAULT)
    with pytest.raises(native.NativeCrash) as err:
        native.extra_buffers_for(fresh_model)
    line = str(err.value)
    assert "\n" not in line and "SIGSEGV" in line and "model.gguf" in line and "AVX2" in line
    assert "with and without extra weight buffers" in line

    # the command line says it in one line too, with exit 2, and no engine is loaded
    from diptych.cli import main

    assert main(["--model", str(fresh_model), "chat", "--prompt", "hi", "--max-tokens", "2"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "crashes (SIGSEGV)" in err_lines[0]


def test_a_python_failure_in_the_child_is_no_native_crash(tmp_path, tiny_gguf, monkeypatch):
    """An architecture llama.cpp refuses fails in Python, not natively: the load in this
    process then gives the usual reason."""
    from diptych.models import catalog
    from diptych.models.engine import Engine

    monkeypatch.setattr(native, "checks_dir", lambda: tmp_path / "checks")
    assert native.extra_buffers_for(tiny_gguf) is native.extra_buffers_default(native.cpu_features())
    with pytest.raises(catalog.ModelFileError, match="llama.cpp could not load tiny.gguf"):
        Engine(tiny_gguf)


def test_the_app_says_which_model_crashed_and_keeps_its_own(qtbot, window, fresh_model, monkeypatch):
    monkeypatch.setattr(native, "probe_command", lambda path, extra: SEGFAULT)
    before = window.controller.engines["base"]
    with qtbot.waitSignal(window.controller.error, timeout=30_000) as blocker:
        window.open_model(fresh_model)
    message = blocker.args[1]
    assert "crashes (SIGSEGV)" in message and "model.gguf" in message and "\n" not in message
    assert window.controller.engines["base"] is before


def test_diptych_chat_answers_on_this_machine(tmp_path, data_dir):
    """End to end in a fresh process with an empty user cache: the check runs in its child,
    then both panes answer."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop(native.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-m", "diptych", "--data-dir", str(data_dir), "chat",
                          "--prompt", "What is the capital of France?", "--max-tokens", "6",
                          "--seed", "3", "--json"], capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tuned"]["n_tokens"] > 0
    (check,) = (tmp_path / "cache" / "diptych" / "llama-checks").iterdir()
    record = json.loads(check.read_text())
    assert record["extra_buffers"] is (not any(f.startswith("AMX") for f in native.cpu_features()))
