"""Running slow work off the UI thread, in the style of Anki's ``CollectionOp``.

``run_op(parent, op, success, failure)`` runs ``op()`` in a worker thread and calls
``success(result)`` or ``failure(exc)`` back on the UI thread. ``run_stream`` does the
same for a generator, delivering each yielded item on the UI thread. Both use superqt's
thread workers; nothing here knows about models or SQL.
"""

from __future__ import annotations

from typing import Callable, Iterator

from PySide6.QtCore import QThreadPool
from superqt.utils import GeneratorWorker, FunctionWorker, create_worker


def ensure_pool(min_threads: int = 8) -> None:
    """Two streaming panes must never starve a model load or a store query of a thread."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < min_threads:
        pool.setMaxThreadCount(min_threads)


def run_op(
    op: Callable[[], object],
    success: Callable[[object], None] | None = None,
    failure: Callable[[BaseException], None] | None = None,
    parent=None,
) -> FunctionWorker:
    worker = create_worker(op, _start_thread=False, _ignore_errors=True)
    if success:
        worker.returned.connect(success)
    if failure:
        worker.errored.connect(failure)
    if parent is not None:
        # Keep the worker alive as long as the caller needs it.
        parent._workers = getattr(parent, "_workers", set()) | {worker}
        worker.finished.connect(lambda: parent._workers.discard(worker))
    ensure_pool()
    worker.start()
    return worker


def run_stream(
    gen: Callable[[], Iterator[object]],
    item: Callable[[object], None],
    failure: Callable[[BaseException], None] | None = None,
    finished: Callable[[], None] | None = None,
) -> GeneratorWorker:
    def loop():
        yield from gen()

    worker = create_worker(loop, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(item)
    if failure:
        worker.errored.connect(failure)
    if finished:
        worker.finished.connect(finished)
    ensure_pool()
    worker.start()
    return worker
