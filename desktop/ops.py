"""Operations and queries, run off the UI thread (Anki's ``CollectionOp`` and ``QueryOp``).

Every change the window makes is an *operation*: a function below that does it and returns
the ``Changes`` it made (or a ``Done`` holding its value and its ``Changes``).
``run_op(parent, op, success)`` runs it in a worker thread; when it returns, ``success``
gets the value on the UI thread and the ``Changes`` are announced once through
``hub().changed(changes, initiator)``. Each view subscribes to the hub in its own
``__init__`` and redraws for its own flags only; the initiator (the view that ran the
operation, by default ``parent``) may have redrawn already. An operation that queues its
work on the session (``Session.*_later``) returns that work's Future: ``run_op`` waits for
it on no thread and goes on when it is done. When an operation raises, the
user is told: a ``UserError`` as one dialog line, anything else as a bug with its
traceback on stderr; ``failure`` replaces that.

Every read of the store or the disk is a *query*: ``run_query(parent, query, success)``
runs ``query()`` in a worker thread, one query at a time (the views share one read
connection), and hands its result to ``success`` on the UI thread. It announces nothing.
``wait_for_queries()`` lets a test wait until none, and no operation, is running.
"""

from __future__ import annotations

import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QCoreApplication, QDeadlineTimer, QObject, QThread, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget
from shiboken6 import isValid

from diptych.models import adapters as registry
from diptych.models.errors import UserError
from diptych.models.session import Changes, Contender, Session
from diptych.models.vote_queue import Item, VoteQueue
from diptych.training import prompt_sets

from . import workers

__all__ = ["Changes", "Done", "hub", "run_op", "run_query", "wait_for_queries"]

_pending = 0  # operations and queries started, not yet back on the UI thread


class Hub(QObject):
    changed = Signal(object, object)  # Changes, initiator (the object that ran the operation)
    _settled = Signal(object)  # (Future, callback): a session's queued work is done

    def __init__(self):
        super().__init__()
        self._settled.connect(self._call)  # the hub lives on the UI thread: queued there

    @Slot(object)
    def _call(self, pair) -> None:
        future, callback = pair
        callback(future)

    def when_done(self, future: Future, callback: Callable[[Future], None]) -> None:
        """``callback(future)`` on the UI thread once ``future`` is done (no thread waits)."""
        future.add_done_callback(lambda f: self._settled.emit((f, callback)))


_hub: Hub | None = None


def hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub()
    return _hub


@dataclass
class Done:
    """What an operation returns when it has a value besides its ``Changes``."""

    value: object
    changes: Changes


def message(exc: BaseException) -> str:
    """One line for the user: the error's own words for a UserError, else what went wrong."""
    if isinstance(exc, UserError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (this is a bug in Diptych)"
    return " ".join(text.split()) or type(exc).__name__


def show_failure(parent: QWidget | None, exc: BaseException, title: str = "Could not do that"):
    if not isinstance(exc, UserError):
        traceback.print_exception(exc)
    box = QMessageBox(QMessageBox.Icon.Warning, title, message(exc), parent=parent)
    box.setObjectName("error-dialog")
    box.open()
    return box


def run_op(parent: QObject, op: Callable[[], object],
           success: Callable[[object], None] | None = None,
           failure: Callable[[BaseException], None] | None = None, title: str = "Could not do that",
           initiator: object | None = None, in_thread: bool = True):
    """Run the operation ``op``; see the module's notes. ``in_thread=False`` runs it at once
    on the UI thread: for the few that touch neither the disk nor a model (Blind) and must
    be in place before the next thing the user does."""
    initiator = parent if initiator is None else initiator

    def done(result):
        global _pending
        if isinstance(result, Future):  # queued on the session: back here when it is done
            hub().when_done(result, settled)
            return
        _pending -= 1
        changes = result.changes if isinstance(result, Done) else result
        if success is not None and _alive(parent):
            success(result.value if isinstance(result, Done) else result)
        if isinstance(changes, Changes) and changes:
            hub().changed.emit(changes, initiator)

    def failed(exc):
        global _pending
        _pending -= 1
        if failure is not None and _alive(parent):
            failure(exc)
        elif failure is None:
            show_failure(parent if isinstance(parent, QWidget) and _alive(parent) else None,
                         exc, title)

    def settled(future: Future):
        try:
            result = future.result()
        except BaseException as exc:  # noqa: BLE001 - told like the op's own failure
            failed(exc)
            return
        done(result)

    global _pending
    _pending += 1
    if not in_thread:
        try:
            result = op()
        except Exception as exc:  # told like a worker's failure
            failed(exc)
            return None
        done(result)
        return None
    return workers.start(op, done, failed)


# -- queries ----------------------------------------------------------------------------

_read_lock = threading.Lock()  # the views' store is one connection: one query at a time


def run_query(parent: QObject, query: Callable[[], object], success: Callable[[object], None],
              failure: Callable[[BaseException], None] | None = None):
    """Run the read ``query()`` off the UI thread; ``success(result)`` back on it. A failure
    goes to ``failure``, or is printed (a read that fails changes nothing)."""
    global _pending
    _pending += 1

    def read():
        with _read_lock:
            return query()

    def done(result):
        global _pending
        _pending -= 1
        if _alive(parent):  # a view closed while it read draws nothing
            success(result)

    def failed(exc):
        global _pending
        _pending -= 1
        if not _alive(parent):
            return
        if failure is not None:
            failure(exc)
        else:
            traceback.print_exception(exc)

    return workers.start(read, done, failed)


def _alive(parent) -> bool:
    """Whether ``parent``'s Qt object still exists (a window closed meanwhile has gone)."""
    return not isinstance(parent, QObject) or isValid(parent)


def wait_for_queries(timeout_ms: int = 10_000) -> None:
    """Process events until no query or operation is running: what each started (the
    queries an operation's ``Changes`` start) included. For tests."""
    deadline = QDeadlineTimer(timeout_ms)
    while True:
        QCoreApplication.processEvents()
        if _pending == 0:
            QCoreApplication.processEvents()
            if _pending == 0:
                return
        if deadline.hasExpired():
            raise TimeoutError(f"{_pending} queries or operations still running after {timeout_ms} ms")
        QThread.msleep(5)


# -- the operations ---------------------------------------------------------------------
# Each runs in a worker thread and returns what it changed.

# Those that queue work on the session return its Future (of their Changes).

def answer(session: Session, side: str, on_token, cancel) -> Future:
    return session.answer_later(side, on_token, cancel)


def vote(session: Session, choice: str, better_text: str | None = None) -> Future:
    return session.vote_later(choice, better_text)


def retry_vote(session: Session) -> Future:
    return session.retry_vote_later()


def undo_vote(session: Session) -> Future:
    return session.undo_vote_later()


def load_model(session: Session, path, adapter=None) -> Future:
    """Load ``path`` into both slots; ``adapter``: the right slot's GGUF LoRA."""
    wanted = {"right": Contender.of(adapter)} if adapter is not None else None
    return session.load_later(path, wanted)


def score(session: Session, side: str) -> Future:
    """Where ``side``'s last answer moved from the base (a Comparison; changes nothing)."""
    return session.score_later(side)


def use_contender(session: Session, slot: str, contender: Contender) -> Future:
    return session.set_contender_later(slot, contender)


def answer_queue_item(queue: VoteQueue, item: Item, cancel) -> Future:
    return queue.answer_later(item, cancel)


def queue_vote(queue: VoteQueue, choice: str, better_text: str | None = None) -> Future:
    return queue.vote_later(choice, better_text)


def queue_skip(queue: VoteQueue) -> Future:
    return queue.skip_later()


def queue_back(queue: VoteQueue) -> Future:
    return queue.back_later()


def new_queue(session: Session, source: str, count: int) -> Future:
    """Queue ``count`` prompts of ``source`` (a file, task:NAME, history, held-out), read
    and written on the store queue: a Done of the queue's id."""
    def create() -> Done:
        found = prompt_sets.load(source, count, session.store)
        return Done(prompt_sets.enqueue(session.store, found), Changes(queue=True))

    return session.store_queue.submit(create)


def new_conversation(session: Session) -> Changes:
    return session.new_conversation()


def add_turn(session: Session, text: str) -> Changes:
    return session.add_turn(text)


def set_blind(session: Session, blind: bool) -> Changes:
    return session.set_blind(blind)


def rename_adapter(root, name: str, new_name: str) -> Changes:
    registry.rename(name, new_name, root)
    return Changes(adapters=True)


def delete_adapter(root, name: str) -> Changes:
    registry.delete(name, root)
    return Changes(adapters=True)


def record_drift(info, results: dict) -> Done:
    """Store a drift measurement in the adapter's meta.json."""
    return Done(registry.record_drift(info, {k: d.to_dict() for k, d in results.items()}),
                Changes(adapters=True))


def job_finished() -> Changes:
    """A training job registered an adapter (the job wrote it; this tells the views)."""
    return Changes(adapters=True)


def adapters_folder_changed() -> Changes:
    """Something outside the app (a job run from a shell, a rename there) changed the
    adapters folder."""
    return Changes(adapters=True)


def write_votes(writer: Callable, fn: Callable) -> Done:
    """A store write ``fn(store)`` of votes (delete, restore, import), through ``writer``."""
    return Done(writer(fn), Changes(votes=True))
