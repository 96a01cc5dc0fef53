"""Starting a function in a worker thread, in the style of Anki's ``CollectionOp``.

``start(fn, returned, errored, parent)`` runs ``fn()`` in a superqt thread worker and calls
``returned(result)`` or ``errored(exc)`` back on the UI thread. Nothing here knows about
models or SQL; the window's operations and queries are in ``ops``.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QThreadPool
from superqt.utils import FunctionWorker, create_worker


def ensure_pool(min_threads: int = 8) -> None:
    """A model load and a scoring hold a thread while they wait for the session's queues
    (``Session.load``, ``Session.score``): queries and other operations must still get one.
    (Answers, votes and adapter switches hold none: ``ops.run_op`` waits for their Futures.)"""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < min_threads:
        pool.setMaxThreadCount(min_threads)


def start(fn: Callable[[], object], returned: Callable[[object], None],
          errored: Callable[[BaseException], None], parent=None) -> FunctionWorker:
    worker = create_worker(fn, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    if parent is not None:
        # Keep the worker alive as long as the caller needs it.
        parent._workers = getattr(parent, "_workers", set()) | {worker}
        worker.finished.connect(lambda: parent._workers.discard(worker))
    ensure_pool()
    worker.start()
    return worker
