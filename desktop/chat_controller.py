"""The Chat tab's Qt face of a ``Session``: ops in, signals out.

Widgets never call llama.cpp or the store: they call this controller, which runs the
session's operations through ``ops.run_op`` (off the UI thread) and turns what comes
back into signals. The session's queues keep each engine to one call at a time; the two
sides stream at the same time.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from diptych.models.conversation import SIDES
from diptych.models.engine import Completion, Engine
from diptych.models.session import Contender, Session

from . import ops

__all__ = ["ChatController"]


class ChatController(QObject):
    engines_changed = Signal()
    busy_changed = Signal(bool)
    answer_started = Signal(str)  # side
    answer_delta = Signal(str, str)  # side, text added
    answer_finished = Signal(str, object)  # side, Completion
    answer_failed = Signal(str, str)  # side, message
    turn_complete = Signal(int)  # both sides have answered this turn
    conversation_reset = Signal()
    error = Signal(str, str)  # title, message (for a dialog)
    loading_changed = Signal(bool)
    scores_ready = Signal(str, object)  # side, scoring.Comparison
    scores_failed = Signal(str, str)  # side, message
    vote_saving = Signal(str)  # choice: sent to the store, not yet committed
    vote_recorded = Signal(int, str)  # vote id, choice: committed
    vote_failed = Signal(str, str)  # choice, why: kept, and can be retried
    vote_undone = Signal(int)
    blind_changed = Signal(str)  # what the user should know about the switch

    def __init__(self, parent=None, n_ctx: int = 4096):
        super().__init__(parent)
        self.session = Session(n_ctx=n_ctx)
        self.partial: dict[str, str] = {s: "" for s in SIDES}
        self.last: dict[str, Completion | None] = {s: None for s in SIDES}
        self.failed: dict[str, str | None] = {s: None for s in SIDES}
        # (turn, side) -> the session's Answer: which contender wrote each answer shown
        self.written_by: dict[tuple[int, str], object] = {}
        self._running: dict[str, threading.Event] = {}  # side -> its cancel flag
        self._pending: list = []  # actions waiting for the streams to stop
        self.loading = False
        self._loaded: dict[str, Engine] = {}  # the session's engines, once a load is done
        self.saving_vote = False
        self.answer_delta.connect(self._collect)

    # -- state -------------------------------------------------------------------------

    @property
    def engines(self) -> dict[str, Engine]:
        """The two engines under the panes' default roles: the left slot's as ``base``,
        the right slot's (the toolbar's adapter) as ``tuned``."""
        e = self._loaded
        return {"base": e["left"], "tuned": e["right"]} if e else {}

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def is_running(self, side: str) -> bool:
        return side in self._running

    def authors(self, side: str) -> dict[int, tuple]:
        """turn -> (engine, contender) that wrote ``side``'s answer to it (the answer being
        written now included: a switch queued behind it must not take its name)."""
        found = {turn: (a.engine, a.contender)
                 for (turn, s), a in self.written_by.items() if s == side}
        live = self.session.answers.get(side)
        if live is not None:
            found[live.turn] = (live.engine, live.contender)
        return found

    @property
    def can_vote(self) -> bool:
        return not self.busy and not self.saving_vote and self.session.can_vote

    # -- models ------------------------------------------------------------------------

    def load_model(self, path: str | Path, adapter: str | Path | None = None,
                   on_loaded=None) -> None:
        """Load ``path`` into both slots off the UI thread; keep the old ones on failure.
        ``adapter``: the right slot's GGUF LoRA (default: the one it has)."""
        def loaded(_changes):
            self._loaded = dict(self.session.engines)
            self._set_loading(False)
            self.engines_changed.emit()
            if on_loaded:
                on_loaded()

        def failed(exc):
            self._set_loading(False)
            self.error.emit("Could not open the model", ops.message(exc))

        def start():
            self._set_loading(True)
            ops.run_op(self, partial(ops.load_model, self.session, path, adapter), loaded, failed)

        self._when_idle(start)

    def adapter_path(self, slot: str = "right") -> Path | None:
        return self.session.contenders[slot].adapter

    def set_adapter(self, path: str | Path | None, scale: float = 1.0, on_done=None,
                    slot: str = "right") -> None:
        """Run the GGUF LoRA ``path`` (None: none) in ``slot``; queued behind the
        answers and scores that use that engine, so it never finds it busy."""
        if not self.session.engines:
            return

        def done(_changes):
            self.engines_changed.emit()
            if on_done:
                on_done(0.0)

        def failed(exc):
            self.error.emit("Could not use the adapter", ops.message(exc))
            self.engines_changed.emit()

        ops.run_op(self, partial(ops.use_contender, self.session, slot, Contender.of(path, scale)),
                   done, failed)

    def set_template_source(self, source: str | None) -> None:
        """Override the chat template for both panes (None: back to the model's own)."""
        self.session.set_template_source(source)

    def _set_loading(self, value: bool) -> None:
        self.loading = value
        self.loading_changed.emit(value)

    # -- conversation ------------------------------------------------------------------

    def send(self, text: str) -> bool:
        if not text.strip() or self.busy or self.loading or len(self.session.engines) < 2:
            return False
        ops.run_op(self, partial(ops.add_turn, self.session, text), in_thread=False)
        for side in SIDES:
            self._start(side)
        return True

    def regenerate(self, side: str | None = None) -> None:
        if not self.session.conversation.turns or self.loading:
            return
        for s in [side] if side else SIDES:
            if not self.is_running(s):
                self._start(s)

    def stop(self, side: str | None = None) -> None:
        for s in [side] if side else list(self._running):
            if s in self._running:
                self._running[s].set()

    def new_conversation(self) -> None:
        def done(_changes):
            self.partial = {s: "" for s in SIDES}
            self.last = {s: None for s in SIDES}
            self.written_by = {}
            self.saving_vote = False
            self.conversation_reset.emit()

        def reset():  # on the UI thread: the next prompt must find the new conversation
            ops.run_op(self, partial(ops.new_conversation, self.session), done, in_thread=False)

        self.stop()
        self._when_idle(reset)

    def set_blind(self, blind: bool) -> None:
        """Blind mode from the next conversation on; the one on screen is kept. (On the
        UI thread: the next prompt sent must find it set.)"""
        def done(_changes):
            if self.session.conversation.turns:
                when = "the next conversation (New conversation, Ctrl+N)"
                self.blind_changed.emit(f"Blind mode {'on' if blind else 'off'} from {when}; "
                                        "this one keeps its names.")
            else:
                self.blind_changed.emit("")
                self.engines_changed.emit()

        ops.run_op(self, partial(ops.set_blind, self.session, blind), done, in_thread=False)

    # -- streams -----------------------------------------------------------------------

    def _start(self, side: str) -> None:
        cancel = threading.Event()
        self.partial[side] = ""
        self.last[side] = None
        self.failed[side] = None
        was_busy = self.busy
        self._running[side] = cancel
        emit = partial(self.answer_delta.emit, side)  # from the engine's thread: queued
        ops.run_op(self, partial(ops.answer, self.session, side, emit, cancel),
                   partial(self._on_done, side), partial(self._on_failure, side))
        self.answer_started.emit(side)
        if not was_busy:
            self.busy_changed.emit(True)

    def _collect(self, side: str, text: str) -> None:
        self.partial[side] += text

    def _on_done(self, side: str, completion: Completion) -> None:
        self.last[side] = completion
        answer = self.session.answers.get(side)
        if answer is not None:
            self.written_by[(answer.turn, side)] = answer
        self._running.pop(side, None)
        self.answer_finished.emit(side, completion)
        self._finished()

    def _on_failure(self, side: str, exc: BaseException) -> None:
        self.failed[side] = ops.message(exc)
        self._running.pop(side, None)
        self.answer_failed.emit(side, self.failed[side])
        self._finished()

    def _finished(self) -> None:
        if self.busy:
            return
        self.busy_changed.emit(False)
        if all(self.last[s] is not None for s in SIDES):
            self.turn_complete.emit(len(self.session.conversation.turns) - 1)
        pending, self._pending = self._pending, []
        for action in pending:
            action()

    def _when_idle(self, action) -> None:
        """Run ``action`` now, or once the running streams have stopped."""
        if self.busy:
            self._pending.append(action)
        else:
            action()

    # -- where a contender moved from the base -----------------------------------------

    def score(self, side: str) -> None:
        """Score ``side``'s last answer; emits ``scores_ready`` or ``scores_failed``."""
        if self.last[side] is None or self.is_running(side):
            self.scores_failed.emit(side, "no finished answer to score")
            return
        ops.run_op(self, partial(ops.score, self.session, side),
                   lambda comparison: self.scores_ready.emit(side, comparison),
                   lambda exc: self.scores_failed.emit(side, ops.message(exc)))

    # -- votes -------------------------------------------------------------------------

    def vote(self, choice: str, better_text: str | None = None) -> bool:
        """Send the user's verdict to the store; ``vote_recorded`` once it is committed,
        ``vote_failed`` (the vote kept for ``retry_vote``) when it cannot be."""
        if not self.can_vote:
            return False
        self._save_vote(choice, partial(ops.vote, self.session, choice, better_text))
        return True

    def retry_vote(self) -> None:
        pending = self.session.pending_vote
        if pending is not None and not self.saving_vote:
            self._save_vote(pending[0], partial(ops.retry_vote, self.session))

    def _save_vote(self, choice: str, op) -> None:
        self.saving_vote = True
        self.vote_saving.emit(choice)

        def done(_changes):
            self.saving_vote = False
            self.vote_recorded.emit(self.session.vote_id, choice)

        def failed(exc):
            self.saving_vote = False
            self.vote_failed.emit(choice, ops.message(exc))

        ops.run_op(self, op, done, failed)

    def undo_vote(self) -> None:
        vote_id = self.session.vote_id
        if vote_id is None or self.saving_vote:
            return
        self.saving_vote = True

        def done(_changes):
            self.saving_vote = False
            self.vote_undone.emit(vote_id)

        def failed(exc):
            self.saving_vote = False
            self.error.emit("The vote was not undone", ops.message(exc))

        ops.run_op(self, partial(ops.undo_vote, self.session), done, failed)
