"""The Queue tab's Qt face of a ``VoteQueue``: ops in, signals out, the answers kept ahead.

The queue's pairs are answered one at a time on the panes' engines (the session's slot
queues), while fewer than ``AHEAD`` wait for the person; not while paused, a model loads
or the panes stream. The panes come first: when they start, a queue answer that is
running is cancelled (nothing of it is recorded) and its item answered once they stop.
A vote, skip or back moves the person's place at once, on the UI thread, so the next
pair is on screen before the vote's commit; the commit is reported after it.
"""

from __future__ import annotations

import threading
from functools import partial

from PySide6.QtCore import QObject, Signal

from diptych.models.vote_queue import Item, VoteQueue

from . import ops
from .chat_controller import ChatController

__all__ = ["QueueController"]


class QueueController(QObject):
    changed = Signal()  # the queue, the place in it or its pairs: redraw
    opened = Signal()  # another queue is shown
    recorded = Signal(object, str)  # Item, choice: that vote is committed
    write_failed = Signal(str)  # why the database refused a vote, a skip or a back
    error = Signal(str, object)  # title, exception: for a dialog

    AHEAD = 4  # pairs answered ahead of the person

    def __init__(self, chat: ChatController, store, parent=None):
        super().__init__(parent)
        self.chat, self.session, self.store = chat, chat.session, store  # store: for reads
        self.queue: VoteQueue | None = None
        self.paused = False
        self.answering: Item | None = None  # the item both engines answer now
        self._cancel: threading.Event | None = None
        chat.busy_changed.connect(self._on_chat_busy)
        chat.engines_changed.connect(self.keep_ahead)

    # -- which queue -------------------------------------------------------------------

    def create(self, source: str, count: int) -> None:
        """Queue ``count`` prompts of ``source`` and open the queue; a bad source is one
        dialog line, and nothing is queued."""
        ops.run_op(self, partial(ops.new_queue, self.session, source, count), self.open,
                   lambda exc: self.error.emit("Nothing was queued", exc))

    def open(self, queue_id: int) -> None:
        """Show queue ``queue_id`` at the person's place in it (read off the UI thread)."""
        store = self.store
        ops.run_query(self, lambda: (store.queue(queue_id), store.queue_items(queue_id)),
                      lambda found: self._opened(*found))

    def _opened(self, queue: dict, rows: list[dict]) -> None:
        self.stop()
        self.queue = VoteQueue(self.session, queue, rows)
        self.opened.emit()
        self.changed.emit()
        self.keep_ahead()

    def refresh(self) -> None:
        """Votes changed elsewhere (the Data tab): an item whose vote was deleted there is
        undecided again."""
        queue, store = self.queue, self.store
        if queue is None:
            return

        def read():
            return store.queue_items(queue.id)

        def done(rows):
            queue.forget_deleted(rows)
            self.changed.emit()

        ops.run_query(self, read, done)

    # -- answering ahead ---------------------------------------------------------------

    def keep_ahead(self) -> None:
        """Answer the next item, unless enough pairs wait, one is being answered, the
        queue is paused, a model loads or the panes stream."""
        queue = self.queue
        if (queue is None or self.paused or self.answering is not None or self.chat.busy
                or self.chat.loading or len(self.session.engines) < 2):
            return
        item = queue.to_answer(self.AHEAD)
        if item is None:
            return
        self.answering, self._cancel = item, threading.Event()

        def settled(_result):  # answered, cancelled or failed (the item says why)
            self.answering = self._cancel = None
            self.changed.emit()
            self.keep_ahead()

        ops.run_op(self, partial(ops.answer_queue_item, queue, item, self._cancel),
                   settled, settled)
        self.changed.emit()

    def set_paused(self, paused: bool) -> None:
        """Stop answering ahead (the answer running now is cancelled), or go on."""
        self.paused = paused
        if paused:
            self.stop()
        self.changed.emit()
        self.keep_ahead()

    def stop(self) -> None:
        """Cancel the queue answer running now, if any (it is answered again later)."""
        if self._cancel is not None:
            self._cancel.set()

    def _on_chat_busy(self, busy: bool) -> None:
        if busy:
            self.stop()
        else:
            self.keep_ahead()

    # -- the person's verdicts ---------------------------------------------------------

    def vote(self, choice: str, better_text: str | None = None) -> bool:
        """Vote on the pair on screen and show the next at once; False: no pair to vote on."""
        queue = self.queue
        item = queue.current if queue is not None else None
        if item is None or not item.answered:
            return False
        self._decide(partial(ops.queue_vote, queue, choice, better_text),
                     lambda _changes: self.recorded.emit(item, choice))
        return True

    def skip(self) -> None:
        if self.queue is not None and self.queue.current is not None:
            self._decide(partial(ops.queue_skip, self.queue))

    def back(self) -> None:
        if self.queue is not None:
            self._decide(partial(ops.queue_back, self.queue))

    def _decide(self, op, success=None) -> None:
        def failed(exc):
            self.write_failed.emit(ops.message(exc))
            self.changed.emit()

        # On the UI thread: it only moves the place and queues the write, so the next
        # key finds the place moved.
        ops.run_op(self, op, success, failed, in_thread=False)
        self.changed.emit()
        self.keep_ahead()
