"""Starting a function in a worker thread, in the style of Anki's ``CollectionOp``.

``start(fn, returned, errored)`` runs ``fn()`` in a superqt thread worker and calls
``returned(result)`` or ``errored(exc)`` back on the UI thread. Nothing here knows about
models or SQL; the window's operations and queries are in ``ops``.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QThreadPool
from superqt.utils import FunctionWorker, create_worker


_running: set[FunctionWorker] = set()


def ensure_pool(min_threads: int = 8) -> None:
    """A few operations hold a thread for long (a drift measurement, an import of votes):
    queries and other operations must still get one on a two-core machine, whose default
    pool is two wide. (The session's work holds none: ``ops.run_op`` waits for its
    Futures on no thread.)"""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < min_threads:
        pool.setMaxThreadCount(min_threads)


def start(fn: Callable[[], object], returned: Callable[[object], None],
          errored: Callable[[BaseException], None]) -> FunctionWorker:
    worker = create_worker(fn, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    _running.add(worker)  # a worker nothing refers to could be collected before it reports
    worker.finished.connect(lambda: _running.discard(worker))
    ensure_pool()
    worker.start()
    return worker
