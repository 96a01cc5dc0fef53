"""The chat's wiring: two engines, one two-sided conversation, and the workers between.

Widgets never call llama.cpp themselves: they call this controller and listen to its
signals. Each engine is driven by at most one worker at a time; the two sides stream at
the same time.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from diptych.models import catalog, scoring, templates
from diptych.models.conversation import SIDES, Conversation
from diptych.models.engine import Completion, Engine, SamplingParams, Token

from .workers import run_op, run_stream

ROLES = ("base", "tuned")


@dataclass
class ChatSettings:
    """What both panes share, so the comparison is fair."""

    system_prompt: str = ""
    params: SamplingParams = field(default_factory=SamplingParams)
    template_source: str | None = None  # None: the model's default template


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
    vote_recorded = Signal(int, str)  # vote id, choice
    vote_undone = Signal(int)

    def __init__(self, parent=None, n_ctx: int = 4096):
        super().__init__(parent)
        self.n_ctx = n_ctx
        self.engines: dict[str, Engine] = {}
        self.settings = ChatSettings()
        self.conversation = Conversation()
        self.blind = False
        self.roles = {"left": "base", "right": "tuned"}
        self.partial: dict[str, str] = {s: "" for s in SIDES}
        self.last: dict[str, Completion | None] = {s: None for s in SIDES}
        self.failed: dict[str, str | None] = {s: None for s in SIDES}
        self._running: dict[str, tuple[object, threading.Event]] = {}
        self._pending: list = []  # actions waiting for the streams to stop
        self.loading = False
        # Reward data: every answer is recorded as it finishes, every vote on click.
        self.store = None
        self.conversation_id: int | None = None
        self.response_ids: dict[str, int | None] = {s: None for s in SIDES}
        self.vote_id: int | None = None
        self.revealed = False  # in blind mode: has the user seen which side is which?
        self._context: dict[str, tuple] = {}  # side -> (engine, messages, params) of its answer
        self._score_queue: list[str] = []  # sides waiting to be scored; the first is running

    # -- state -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def is_running(self, side: str) -> bool:
        return side in self._running

    def engine_for(self, side: str) -> Engine | None:
        return self.engines.get(self.roles[side])

    def template(self) -> templates.ChatTemplate | None:
        engine = self.engines.get("base")
        return engine.template if engine else None

    # -- models ------------------------------------------------------------------------

    def load_model(self, path: str | Path, adapter: str | Path | None = None,
                   on_loaded=None) -> None:
        """Load ``path`` into both engines off the UI thread; keep the old ones on failure."""
        adapter = adapter if adapter is not None else self.adapter_path()

        def load():
            catalog.file_hash(path)  # hashed here, off the UI thread; cached for the votes
            base = Engine(path, n_ctx=self.n_ctx)
            tuned = Engine(path, n_ctx=self.n_ctx)
            if adapter:
                tuned.set_adapter(adapter)
            return base, tuned

        def loaded(engines):
            old = list(self.engines.values())
            self.engines = dict(zip(ROLES, engines))
            self._apply_template()
            for engine in old:
                engine.close()
            self._set_loading(False)
            self.engines_changed.emit()
            if on_loaded:
                on_loaded()

        def failed(exc):
            self._set_loading(False)
            self.error.emit("Could not open the model", str(exc))

        def start():
            self._set_loading(True)
            run_op(load, loaded, failed, self)

        self._when_idle(start)

    def adapter_path(self) -> Path | None:
        tuned = self.engines.get("tuned")
        return tuned.adapter_path if tuned else None

    def set_adapter(self, path: str | Path | None, scale: float = 1.0, on_done=None) -> None:
        """Switch the tuned engine's LoRA (None: no adapter); the base weights stay loaded."""
        tuned = self.engines.get("tuned")
        if tuned is None:
            return

        def done(seconds):
            self._set_loading(False)
            self.engines_changed.emit()
            if on_done:
                on_done(seconds)

        def failed(exc):
            self._set_loading(False)
            self.error.emit("Could not use the adapter", str(exc))
            self.engines_changed.emit()

        def start():
            self._set_loading(True)
            run_op(lambda: tuned.set_adapter(path, scale), done, failed, self)

        self._when_idle(start)

    def set_template_source(self, source: str | None) -> None:
        """Override the chat template for both panes (None: back to the model's own)."""
        if source is not None and self.engines:
            templates.custom(source, self.engines["base"].info.default_template())
        self.settings.template_source = source
        self._apply_template()

    def _apply_template(self) -> None:
        for engine in self.engines.values():
            default = engine.info.default_template()
            src = self.settings.template_source
            engine.template = templates.custom(src, default) if src else default

    def _set_loading(self, value: bool) -> None:
        self.loading = value
        self.loading_changed.emit(value)

    # -- conversation ------------------------------------------------------------------

    def send(self, text: str) -> bool:
        text = text.strip()
        if not text or self.busy or self.loading or len(self.engines) < 2:
            return False
        if not self.conversation.turns:
            self.conversation.system = self.settings.system_prompt
            if self.blind:  # which side shows which model: drawn once per conversation
                self.roles = dict(zip(SIDES, random.sample(ROLES, 2)))
            self.conversation_id = None
        turn = self.conversation.add_user(text)
        if self.store is not None:
            if self.conversation_id is None:
                self.conversation_id = self.store.new_conversation(
                    self.conversation.system, self.blind)
            self.store.add_user_message(self.conversation_id, turn, text)
        for side in SIDES:
            self._start(side)
        return True

    def regenerate(self, side: str | None = None) -> None:
        if not self.conversation.turns or self.loading:
            return
        for s in [side] if side else SIDES:
            if not self.is_running(s):
                self.conversation.set_answer(s, None)
                self._start(s)

    def stop(self, side: str | None = None) -> None:
        for s in [side] if side else list(self._running):
            if s in self._running:
                self._running[s][1].set()

    def new_conversation(self) -> None:
        def reset():
            self.conversation = Conversation(system=self.settings.system_prompt)
            self.roles = {"left": "base", "right": "tuned"}
            self.partial = {s: "" for s in SIDES}
            self.last = {s: None for s in SIDES}
            self.conversation_id = None
            self.response_ids = {s: None for s in SIDES}
            self.vote_id = None
            self.revealed = False
            self.conversation_reset.emit()

        self.stop()
        self._when_idle(reset)

    def set_blind(self, blind: bool) -> None:
        self.blind = blind
        if not blind:
            self.roles = {"left": "base", "right": "tuned"}
        self.new_conversation()

    # -- streams -----------------------------------------------------------------------

    def _start(self, side: str) -> None:
        engine = self.engine_for(side)
        messages = self.conversation.messages(side)
        params = self.settings.params  # replaced, never mutated, when a setting changes
        cancel = threading.Event()
        self.partial[side] = ""
        self.last[side] = None
        self.failed[side] = None
        self.response_ids[side] = None
        self.vote_id = None
        self._context[side] = (engine, messages, params)
        worker = run_stream(
            lambda: engine.stream(messages, params, cancel),
            item=partial(self._on_item, side),
            failure=partial(self._on_failure, side),
            finished=partial(self._on_finished, side),
        )
        was_busy = self.busy
        self._running[side] = (worker, cancel)
        self.answer_started.emit(side)
        if not was_busy:
            self.busy_changed.emit(True)

    def _on_item(self, side: str, item) -> None:
        if isinstance(item, Token):
            if item.text:
                self.partial[side] += item.text
                self.answer_delta.emit(side, item.text)
        elif isinstance(item, Completion):
            self.last[side] = item
            self.conversation.set_answer(side, item.text)
            self._record_response(side, item)

    def _on_failure(self, side: str, exc: BaseException) -> None:
        self.failed[side] = str(exc)
        self.answer_failed.emit(side, str(exc))

    def _on_finished(self, side: str) -> None:
        self._running.pop(side, None)
        if self.last[side] is not None:
            self.answer_finished.emit(side, self.last[side])
        if not self.busy:
            self.busy_changed.emit(False)
            if all(self.last[s] is not None for s in SIDES):
                self.turn_complete.emit(len(self.conversation.turns) - 1)
            pending, self._pending = self._pending, []
            for action in pending:
                action()

    def _when_idle(self, action) -> None:
        """Run ``action`` now, or once the running streams have stopped."""
        if self.busy:
            self._pending.append(action)
        else:
            action()

    # -- where the tuned model moved -----------------------------------------------------

    def score(self, side: str) -> None:
        """Score ``side``'s last answer under both models; emits ``scores_ready``.

        Each scoring uses both engines, so requests for the two sides run one after the other.
        """
        done = self.last[side]
        if done is None or self.busy or side not in self._context:
            self.scores_failed.emit(side, "no finished answer to score")
            return
        if side not in self._score_queue:
            self._score_queue.append(side)
        if len(self._score_queue) == 1:
            self._score_next()

    def _score_next(self) -> None:
        side = self._score_queue[0]
        engine, messages, params = self._context[side]
        base, tuned = self.engines["base"], self.engines["tuned"]
        # The mean log-ratio is a KL estimate only for the tuned model's own samples.
        sampled_by_tuned = params if engine is tuned else None
        ids = scoring.answer_ids(self.last[side])
        self._set_loading(True)

        def finish(signal, result):
            self._score_queue.pop(0)
            if self._score_queue:
                self._score_next()
            else:
                self._set_loading(False)
            signal.emit(side, result)

        run_op(lambda: scoring.compare(base, tuned, messages, ids, tuned_sampling=sampled_by_tuned),
               lambda comparison: finish(self.scores_ready, comparison),
               lambda exc: finish(self.scores_failed, str(exc)), self)

    # -- reward data -------------------------------------------------------------------

    def _record_response(self, side: str, done: Completion) -> None:
        """Store an answer with everything needed to learn from a vote on it."""
        if self.store is None or self.conversation_id is None:
            return
        engine, messages, params = self._context[side]
        params = {**params.to_dict(), "seed": done.seed}
        self.response_ids[side] = self.store.add_response(
            self.conversation_id, len(self.conversation.turns) - 1, side, self.roles[side],
            done.text,
            model=engine.info.name, model_path=str(engine.info.path),
            model_hash=catalog.file_hash(engine.info.path), adapter=engine.adapter_name,
            adapter_path=str(engine.adapter_path) if engine.adapter_path else None,
            adapter_scale=engine.adapter_scale if engine.adapter_path else None,
            template_name=engine.template.name, template_source=engine.template.source,
            params=params, prompt_messages=messages, n_tokens=done.n_tokens,
            ttft_s=done.ttft_s, tokens_per_s=done.tokens_per_s,
            finish_reason=done.finish_reason,
        )

    @property
    def hidden(self) -> bool:
        """Are the panes' model names hidden from the user right now?"""
        return self.blind and not self.revealed

    @property
    def can_vote(self) -> bool:
        return (self.store is not None and not self.busy and self.vote_id is None
                and all(self.response_ids[s] is not None for s in SIDES))

    def vote(self, choice: str, better_text: str | None = None) -> int | None:
        """Record the user's verdict on the two answers shown; committed before returning."""
        if not self.can_vote:
            return None
        self.vote_id = self.store.record_vote(
            self.response_ids["left"], self.response_ids["right"], choice,
            self.hidden, better_text=better_text,
        )
        self.revealed = True
        self.vote_recorded.emit(self.vote_id, choice)
        return self.vote_id

    def undo_vote(self) -> None:
        if self.store is not None and self.vote_id is not None:
            vote_id, self.vote_id = self.vote_id, None
            self.store.undo_vote(vote_id)
            self.vote_undone.emit(vote_id)

