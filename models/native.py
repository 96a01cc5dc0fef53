"""How llama.cpp loads a model on this CPU: the one place every ``llama_cpp.Llama`` is made.

On Intel CPUs with AMX, llama.cpp's extra weight buffers (AMX and repacked weights)
crash inside ``llama_decode`` on the first token of Q4_K_M models, so on a CPU that
reports AMX they are off; elsewhere they stay on. ``DIPTYCH_LLAMA_EXTRA_BUFFERS=0|1``
overrides the choice.

A native crash kills the process with no message, so the first time a model file is
opened with a given llama.cpp and CPU, a short decode runs in a child process first. If
the child dies from a signal, the safe configuration (extra buffers off) is tried the
same way; if that dies too, loading raises one line naming the model and the CPU. The
outcome is remembered in the user cache, so later launches cost nothing.

Run as ``python -m diptych.models.native MODEL.gguf 0|1`` it is that child.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import platformdirs

from . import catalog
from .errors import UserError

ENV_VAR = "DIPTYCH_LLAMA_EXTRA_BUFFERS"
PROBE_TIMEOUT_S = 180  # a load and eight tokens; generous for a busy two-core machine
PROBE_PROMPT = "The capital of France is Paris. The capital of Italy is"

_load_lock = threading.Lock()  # one load at a time: see _model_params
_decided: dict[tuple, bool] = {}  # this process's answers, by (path, size, mtime)


class NativeCrash(catalog.ModelFileError):
    """llama.cpp dies natively on this model and CPU, whatever the configuration."""


def cpu_features(report: str | None = None) -> list[str]:
    """The CPU features llama.cpp reports as in use (``llama_print_system_info``)."""
    if report is None:
        import llama_cpp

        report = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    features = []
    for item in report.replace("\n", "|").split("|"):
        name, _, value = item.rpartition("=")
        name = name.rpartition(":")[2].strip()
        if name and value.strip() == "1":
            features.append(name)
    return sorted(set(features))


def extra_buffers_default(features: list[str], environ=os.environ) -> bool:
    """Whether to load with extra weight buffers: the override, else off where AMX is."""
    value = environ.get(ENV_VAR, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise UserError(f"{ENV_VAR} must be 0 or 1, not {value!r}")
    return not any(f.startswith("AMX") for f in features)


def checks_dir() -> Path:
    """Where the outcomes of the child-process checks are remembered."""
    return Path(platformdirs.user_cache_dir("diptych", appauthor=False)) / "llama-checks"


def probe_command(path: Path, extra_buffers: bool) -> list[str]:
    """The child process that loads ``path`` and decodes a few tokens."""
    return [sys.executable, "-m", "diptych.models.native", str(path), str(int(extra_buffers))]


def _crashed(path: Path, extra_buffers: bool) -> str | None:
    """Run the check in a child: the signal's name if it died from one (or hung), else None.

    A child that fails in Python (an unloadable file) is no native crash: loading in this
    process then raises the usual error."""
    try:
        done = subprocess.run(probe_command(path, extra_buffers), timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer in {PROBE_TIMEOUT_S} s"
    if done.returncode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-done.returncode).name
        return f"signal {-done.returncode}"
    return None


def _remembered(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return checks_dir() / f"{digest}.json"


def _remember(file: Path, record: dict) -> None:
    """Write the outcome whole or not at all (a cache, so a failure to write is no error)."""
    with contextlib.suppress(OSError):
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{file.name}")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, file)


def extra_buffers_for(path: str | os.PathLike) -> bool:
    """Whether ``path`` loads with extra weight buffers on this CPU, checked in a child
    process the first time (see the module's docstring). Raises NativeCrash."""
    import llama_cpp

    path = Path(path).resolve()
    stat = path.stat()
    features = cpu_features()
    chosen = extra_buffers_default(features)
    memo = (str(path), stat.st_size, stat.st_mtime_ns, chosen)
    if memo in _decided:
        return _decided[memo]
    key = {"sha256": catalog.file_hash(path), "llama_cpp": llama_cpp.__version__,
           "cpu": features, "extra_buffers": chosen}
    file = _remembered(key)
    try:
        record = json.loads(file.read_text())
        if record.get("key") != key:
            raise ValueError("another key")
    except (OSError, ValueError):
        record = {"key": key, "model": path.name, "crashes": {}}
        tries = [chosen] if not chosen else [True, False]
        for extra in tries:
            crash = _crashed(path, extra)
            if crash is None:
                record["extra_buffers"] = extra
                break
            record["crashes"][str(int(extra))] = crash
        else:
            record["extra_buffers"] = None
        _remember(file, record)
    if record.get("extra_buffers") is None:
        crashes = ", ".join(sorted(set(record["crashes"].values())))
        raise NativeCrash(
            f"llama.cpp crashes ({crashes}) decoding {path.name} on this CPU "
            f"({' '.join(features) or 'no features reported'}), with and without extra weight "
            f"buffers; try another quantization of the model (Q8_0 or F16) or another "
            f"llama-cpp-python build (the check is remembered in {file})")
    _decided[memo] = bool(record["extra_buffers"])
    return _decided[memo]


@contextlib.contextmanager
def _model_params(use_extra_bufts: bool):
    """``Llama`` takes no parameter for the extra buffers and reads llama.cpp's default
    model parameters while it loads: hand it defaults with the choice made, for this load
    only (loads are serialized, so no other load sees them)."""
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    with _load_lock:
        low.llama_model_default_params = params
        try:
            yield
        finally:
            low.llama_model_default_params = default


def llama(path: str | os.PathLike, extra_buffers: bool | None = None, **kwargs):
    """A ``llama_cpp.Llama`` of ``path`` loaded the way that is safe on this CPU, or with
    ``extra_buffers`` as given (unchecked: for the check itself and for benchmarks)."""
    import llama_cpp

    if kwargs.get("vocab_only"):  # no weights, no decode: nothing to crash on
        return llama_cpp.Llama(str(path), **kwargs)
    if extra_buffers is None:
        extra_buffers = extra_buffers_for(path)
    with _model_params(extra_buffers):
        return llama_cpp.Llama(str(path), **kwargs)


def default_threads(panes: int = 2) -> int:
    """Threads per context so that ``panes`` contexts decoding at once fill the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // panes)


def _probe(path: str, extra_buffers: bool) -> None:
    """The child: load as chosen and decode a prompt and a few tokens, as a pane would."""
    model = llama(path, extra_buffers, n_ctx=256, n_threads=default_threads(),
                  n_threads_batch=default_threads(), verbose=False)
    model.create_completion(PROBE_PROMPT, max_tokens=8, temperature=0.0)


if __name__ == "__main__":
    _probe(sys.argv[1], sys.argv[2] == "1")
