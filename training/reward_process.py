"""A user's reward function, run in a process of its own.

``--reward-fn FILE.py:NAME`` is the user's code: it may call ``sys.exit``, ``os._exit``,
crash the interpreter or never return. Run in the job's process, any of these would end
or hang the job with no word of why. Here it runs in a child process that lives as long
as the job; the job sends each group of answers through a pipe and waits at most
``timeout`` seconds. Whatever goes wrong is one JobError naming the file, and the child
is killed; a job that is cancelled takes its child with it (a daemon process, and the
child ends when its end of the pipe closes).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import pickle
import signal
from pathlib import Path

from . import reward_functions
from .errors import JobError

DEFAULT_TIMEOUT = 60.0  # seconds for one call (a group of answers); --reward-timeout
START_TIMEOUT = 60.0  # seconds to import the file
# What TRL passes that cannot cross a pipe (logging callbacks): the child gets no-ops.
LOCAL_ONLY = ("log_extra", "log_metric")


def load_function(spec: str, timeout: float | None = None) -> "RewardProcess":
    """``FILE.py:NAME`` -> that file's function NAME, run in a process of its own with
    ``timeout`` seconds a call, and checked on every call."""
    file, name = reward_functions.split_spec(spec)
    if not file or not name:
        raise JobError(f"{spec}: give the reward as FILE.py:FUNCTION")
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise JobError(f"{file}: no such reward file")
    return RewardProcess(path, file, name, timeout or DEFAULT_TIMEOUT)


class RewardProcess:
    """The function ``name`` of the reward file at ``path`` (shown as ``file``), in a child
    process; call it with TRL's reward arguments."""

    def __init__(self, path: Path, file: str, name: str, timeout: float = DEFAULT_TIMEOUT):
        self.file, self.timeout = file, timeout
        self.__name__ = name  # TRL logs each reward by its function's name
        context = multiprocessing.get_context("spawn")  # no copy of torch or llama.cpp threads
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, str(path), file, name),
                                        daemon=True, name=f"reward {file}:{name}")
        self._process.start()
        child_end.close()  # the child holds its end: EOF here once it is gone
        self._receive(START_TIMEOUT, "to load")

    def __call__(self, prompts, completions, **columns):
        sent = {k: v if _picklable(v) else None for k, v in columns.items()
                if k not in LOCAL_ONLY}  # TRL's trainer_state may hold what cannot be sent
        try:
            self._conn.send((prompts, completions, sent))
        except OSError:  # the child is gone: say how it ended
            self._receive(0, "")
        return self._receive(self.timeout, f"for {len(completions)} answers")

    def _receive(self, timeout: float, doing: str):
        try:
            ready = self._conn.poll(timeout)
            status, value = self._conn.recv() if ready else (None, None)
        except (EOFError, OSError):
            self.close()
            raise JobError(f"{self.file}: the reward ended the process it runs in "
                           f"({_how_it_ended(self._process.exitcode)})") from None
        if status is None:
            self.close()
            raise JobError(f"{self.file}: the reward took more than {timeout:g} s {doing} and "
                           "was stopped (a loop that does not end? --reward-timeout S sets "
                           "the limit)")
        if status == "error":
            self.close()
            raise JobError(value)
        return value

    def close(self) -> None:
        self._conn.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - whatever pickle raises for what it cannot take
        return False
    return True


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "it did not answer"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"it was killed by {name}" + (": a crash" if -code == signal.SIGSEGV else "")
    return f"it exited with status {code}, as sys.exit or os._exit do"


def _die_with_parent() -> None:
    """Be killed when the job dies, even by SIGKILL: a reward stuck in a loop never reads
    the pipe that would tell it (Linux's PR_SET_PDEATHSIG; elsewhere the pipe only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn, path: str, file: str, name: str) -> None:
    """The child: load the function, then answer each call until the job closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C cancels the job, which ends us
    _die_with_parent()
    try:
        fn = reward_functions.load_in_process(Path(path), file, name)
    except JobError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    no_op = lambda *args, **kwargs: None  # noqa: E731
    while True:
        try:
            prompts, completions, columns = conn.recv()
        except (EOFError, OSError):  # the job ended
            return
        columns.update({key: no_op for key in LOCAL_ONLY})
        try:  # checked: any failure of the user's code is a JobError naming the file
            conn.send(("ok", fn(prompts=prompts, completions=completions, **columns)))
        except JobError as exc:
            conn.send(("error", str(exc)))
