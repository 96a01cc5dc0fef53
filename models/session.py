"""A chat session: two contenders answering one conversation, and what the user thought.

The Qt-free core of the desktop's Chat tab (Anki's pattern: the collection in the core,
the GUI a thin layer of operations on it). A session holds

- the conversation (``Conversation``: shared user turns, each side its own answers);
- two engine slots, ``left`` and ``right``, each running one contender: the base, or the
  base plus a GGUF LoRA adapter. Which slot shows on which side is ``shown``: in blind
  mode it is drawn once per conversation, so the user cannot tell who is where;
- one serial work queue per slot: streaming, scoring, adapter switches and reloads of an
  engine run one after the other in the order asked, so they never collide (llama.cpp
  contexts cannot run two calls at once), and a store queue for the database;
- the recording of every answer and vote. A write that fails (another process holds the
  database's write lock past the busy timeout) leaves what it was writing pending:
  the next write, or the user's retry of a vote, writes it. Nothing is dropped.

Every method may block (it waits for its queue): call them off the UI thread. Those
that change what a view shows return ``Changes``. Each ``*_later`` method queues the
same work and returns its Future at once; no thread waits for it.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from . import catalog, scoring, templates
from .conversation import SIDES, Conversation
from .engine import Completion, Engine, SamplingParams, Token
from .errors import UserError

SLOTS = SIDES  # an engine slot is named after the side it shows on outside blind mode
BASE = "base"


class SessionError(UserError):
    """An operation the session cannot do now; says why in one line."""


class StoreWriteError(SessionError):
    """The database refused a write (another program holds its write lock, the disk is
    full); nothing of it was written, and it can be tried again."""


@dataclass(frozen=True)
class Changes:
    """What an operation changed, so each view redraws only what it shows."""

    conversation: bool = False  # turns or answers
    contenders: bool = False  # models, adapters in the panes, or who shows where
    votes: bool = False  # votes were recorded, undone, deleted, restored or imported
    adapters: bool = False  # the adapter registry: a new, renamed or deleted adapter
    blind: bool = False
    queue: bool = False  # a vote queue was made, or an item of one voted on, skipped or reopened

    def __or__(self, other: Changes) -> Changes:
        return Changes(**{f.name: getattr(self, f.name) or getattr(other, f.name)
                          for f in fields(self)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Contender:
    """What one pane runs: the base alone, or the base plus a GGUF LoRA."""

    adapter: Path | None = None  # the GGUF LoRA file
    adapter_id: str | None = None  # the adapter's stable id (survives a rename)
    name: str | None = None  # the adapter's name when it was chosen
    scale: float = 1.0

    @classmethod
    def of(cls, adapter: str | Path | None, scale: float = 1.0) -> Contender:
        """The contender running the GGUF LoRA at ``adapter`` (None: the base alone)."""
        if adapter is None:
            return cls()
        path = Path(adapter)
        name = path.parent.name if path.name == "adapter.gguf" else path.stem
        return cls(path, catalog.file_hash(path), name, scale)

    @property
    def identity(self) -> str:
        return (self.name or BASE) if self.adapter is not None else BASE

    @property
    def role(self) -> str:
        """The store's word for it: ``base`` without an adapter, ``tuned`` with one."""
        return "tuned" if self.adapter is not None else "base"


@dataclass
class ChatSettings:
    """What both panes share, so the comparison is fair."""

    system_prompt: str = ""
    params: SamplingParams = field(default_factory=SamplingParams)
    template_source: str | None = None  # None: the model's default template


@dataclass
class Answer:
    """One side's latest answer to the last turn, with what produced it."""

    messages: list[dict]
    params: SamplingParams
    contender: Contender
    engine: Engine
    turn: int = 0
    completion: Completion | None = None
    response_id: int | None = None  # its row in the store, once written


@dataclass
class Record:
    """What of one conversation the store holds (written on the store queue only)."""

    conversation: Conversation
    blind: bool = False
    prompt_set: str | None = None  # the source of the vote queue it answers an item of
    id: int | None = None  # its row, once written
    turns_written: int = 0

    def write(self, store, answers: dict[str, Answer | None]) -> None:
        """Write what the store lacks: the conversation, its user turns, the finished
        ``answers``. Each row is its own transaction: what was written stays written
        when a later row fails, and is not written twice."""
        turns = [t.user for t in self.conversation.turns]
        if self.id is None and turns:
            self.id = store.new_conversation(self.conversation.system, self.blind,
                                             prompt_set=self.prompt_set)
        while self.turns_written < len(turns):
            store.add_user_message(self.id, self.turns_written, turns[self.turns_written])
            self.turns_written += 1
        for side, answer in answers.items():
            if answer is not None and answer.completion is not None and answer.response_id is None:
                answer.response_id = _write_response(store, self.id, side, answer)

    def vote(self, store, answers: dict[str, Answer], choice: str, better_text: str | None,
             hidden: bool) -> int:
        self.write(store, answers)
        ids = [answers[s].response_id for s in SIDES]
        return store.record_vote(*ids, choice, hidden, better_text=better_text)


class WorkQueue:
    """One thread running what it is given, one call at a time, in order."""

    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable, *args) -> Future:
        return self._pool.submit(fn, *args)

    def run(self, fn: Callable, *args):
        return self.submit(fn, *args).result()

    def barrier(self) -> tuple[threading.Event, threading.Event]:
        """Queue a stop: (``reached``, ``release``). Once the work queued before it is
        done, ``reached`` is set and the queue runs nothing more until ``release`` is."""
        reached, release = threading.Event(), threading.Event()

        def wait():
            reached.set()
            release.wait()

        self.submit(wait)
        return reached, release

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Session:
    def __init__(self, store=None, n_ctx: int = 4096):
        self.store = store  # a training.store.Store used from the store queue only
        self.n_ctx = n_ctx
        self.settings = ChatSettings()
        self.queues = {slot: WorkQueue(f"engine-{slot}") for slot in SLOTS}
        self.store_queue = WorkQueue("store")
        self.engines: dict[str, Engine] = {}
        self.contenders = {slot: Contender() for slot in SLOTS}
        self.shown = dict(zip(SIDES, SLOTS))  # side -> slot
        self.blind = False
        self.conversation = Conversation()
        self.answers: dict[str, Answer | None] = {s: None for s in SIDES}
        self.revealed = False  # in blind mode: has the user seen who is who?
        self.vote_id: int | None = None
        self.pending_vote: tuple[str, str | None] | None = None  # a vote not yet committed
        self.vote_count: int | None = None  # votes that count, after the last one recorded
        self._record = Record(self.conversation)
        # Votes the store refused on turns the user has left: written before anything else.
        self.unsaved_votes: list[Callable] = []
        self._voting: Record | None = None  # the conversation whose vote is being written
        self._lock = threading.RLock()  # guards the recording state across queues
        self._submit_lock = threading.Lock()  # work queued on both slots keeps one order

    # -- who is where ------------------------------------------------------------------

    def contender(self, side: str) -> Contender:
        return self.contenders[self.shown[side]]

    def engine(self, side: str) -> Engine | None:
        return self.engines.get(self.shown[side])

    @property
    def hidden(self) -> bool:
        """Are the panes' model names hidden from the user right now?"""
        return self.conversation_blind and not self.revealed

    @property
    def model_path(self) -> Path | None:
        engine = self.engines.get(SLOTS[0])
        return engine.info.path if engine else None

    def template(self) -> templates.ChatTemplate | None:
        engine = self.engines.get(SLOTS[0])
        return engine.template if engine else None

    # -- models ------------------------------------------------------------------------

    def load(self, path: str | Path, contenders: dict[str, Contender] | None = None) -> Changes:
        """Open ``path`` in both slots, each with its contender's adapter (``contenders``
        replaces some); the old engines and contenders stay when it fails."""
        return self.load_later(path, contenders).result()

    def load_later(self, path: str | Path, contenders: dict[str, Contender] | None = None) -> Future:
        """``load``, queued on both slots: a Future of its Changes (nothing waits for it)."""
        wanted = {**self.contenders, **(contenders or {})}

        def load():
            catalog.file_hash(path)  # hashed once here; cached for the recorded answers
            engines = {}
            try:
                for slot in SLOTS:
                    engines[slot] = Engine(path, n_ctx=self.n_ctx)
                    c = wanted[slot]
                    if c.adapter is not None:
                        engines[slot].set_adapter(c.adapter, c.scale)
            except BaseException:
                for engine in engines.values():
                    engine.close()
                raise
            old, self.engines = self.engines, engines
            self.contenders = wanted
            self._apply_template()
            for engine in old.values():
                engine.close()
            return Changes(contenders=True)

        return self._on_both_slots(load)

    def set_contender(self, slot: str, contender: Contender) -> Changes:
        """Run ``contender`` in ``slot`` from now on (after the work already queued)."""
        return self.set_contender_later(slot, contender).result()

    def set_contender_later(self, slot: str, contender: Contender) -> Future:
        """``set_contender``, queued: a Future of its Changes (nothing waits for it)."""
        def switch():
            engine = self.engines.get(slot)
            if engine is not None:
                engine.set_adapter(contender.adapter, contender.scale)
            self.contenders[slot] = contender
            return Changes(contenders=True)

        return self.queues[slot].submit(switch)

    def set_template_source(self, source: str | None) -> None:
        """Override the chat template for both slots (None: the model's own); a template
        that does not render is refused here."""
        if source is not None and self.engines:
            templates.custom(source, self.engines[SLOTS[0]].info.default_template())
        self.settings.template_source = source
        self._apply_template()

    def _apply_template(self) -> None:
        for engine in self.engines.values():
            default = engine.info.default_template()
            src = self.settings.template_source
            engine.template = templates.custom(src, default) if src else default

    def flush_votes(self) -> int:
        """Try once more to write the votes the store refused (the app does before it
        quits, and asks the user while some remain); returns how many are still unwritten."""
        with self._lock:
            self._keep_pending_vote()
        if self.store is not None and self.unsaved_votes:
            try:
                self.store_queue.run(self._write_unsaved)
            except (sqlite3.Error, OSError):
                pass  # still refused: the caller tells the user
        return len(self.unsaved_votes)

    def close(self) -> None:
        """Write the votes the store refused, if it takes them now; free the engines."""
        self.flush_votes()
        for queue in (*self.queues.values(), self.store_queue):
            queue.close()
        for engine in self.engines.values():
            engine.close()
        self.engines = {}

    # -- the conversation --------------------------------------------------------------

    def new_conversation(self) -> Changes:
        with self._lock:
            self._keep_pending_vote()
            self.conversation = Conversation(system=self.settings.system_prompt)
            self._record = Record(self.conversation)
            self.answers = {s: None for s in SIDES}
            self.shown = dict(zip(SIDES, SLOTS))
            self.revealed = False
            self.vote_id = None
        return Changes(conversation=True, contenders=True)

    def _keep_pending_vote(self) -> None:
        """The user moves on from a vote the store refused: keep it, to be written first
        at the next write (with the answers it judged, whatever comes after)."""
        if self.pending_vote is None:
            return
        if self._voting is not self._record:  # a write in flight keeps it itself if it fails
            choice, better_text = self.pending_vote
            self._keep_vote(self._record, dict(self.answers), choice, better_text, self.hidden)
        self.pending_vote = None

    def _keep_vote(self, record: Record, answers: dict, choice: str, better_text: str | None,
                   hidden: bool) -> None:
        self.unsaved_votes.append(lambda store: record.vote(store, answers, choice, better_text, hidden))

    def set_blind(self, blind: bool) -> Changes:
        """Blind mode from the next conversation on; the one shown keeps its names."""
        self.blind = blind
        if not self.conversation.turns:
            self.shown = dict(zip(SIDES, SLOTS))
        return Changes(blind=True)

    def add_turn(self, text: str) -> Changes:
        """Start a turn with the user's ``text``; both sides answer it next."""
        text = text.strip()
        if not text:
            raise SessionError("type a prompt first")
        if len(self.engines) < len(SLOTS):
            raise SessionError("no model is loaded yet")
        with self._lock:
            self._keep_pending_vote()
            if not self.conversation.turns:
                self.conversation.system = self.settings.system_prompt
                self._record.blind = self.blind
                if self.blind:  # which slot shows on which side: drawn once per conversation
                    self.shown = dict(zip(SIDES, random.sample(SLOTS, 2)))
            self.conversation.add_user(text)
            self.answers = {s: None for s in SIDES}
            self.vote_id = None
        return Changes(conversation=True)

    @property
    def conversation_blind(self) -> bool:
        """Was this conversation started in blind mode?"""
        return bool(self.conversation.turns) and self._record.blind

    def answer(self, side: str, on_token: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None) -> Completion:
        """Sample ``side``'s answer to the last turn (on its slot's queue), streaming each
        piece of text to ``on_token`` from that queue's thread; then record it."""
        return self.answer_later(side, on_token, cancel).result()

    def answer_later(self, side: str, on_token: Callable[[str], None] | None = None,
                     cancel: threading.Event | None = None) -> Future:
        """``answer``, queued: a Future of the Completion, done once it is recorded. The
        slot's queue samples it, then hands the recording to the store queue: no thread
        waits for another's work."""
        if not self.conversation.turns:
            raise SessionError("nothing to answer: send a prompt first")
        slot = self.shown[side]
        with self._lock:
            self.conversation.set_answer(side, None)
            messages = self.conversation.messages(side)
            params = self.settings.params  # replaced, never mutated, when a setting changes
            self._keep_pending_vote()  # a new answer: the refused vote judged the old one
            self.vote_id = None
            turn = len(self.conversation.turns) - 1

        def run() -> Completion:
            engine = self.engines[slot]
            answer = Answer(messages, params, self.contenders[slot], engine, turn)
            with self._lock:
                self.answers[side] = answer
            for item in engine.stream(messages, params, cancel):
                if isinstance(item, Token):
                    if item.text and on_token is not None:
                        on_token(item.text)
                elif isinstance(item, Completion):
                    answer.completion = item
            completion = answer.completion
            with self._lock:
                self.conversation.set_answer(side, completion.text)

            def record():
                try:
                    self._write_pending()
                except Exception:  # noqa: BLE001 - kept pending: the vote writes it, or says why not
                    pass
                result.set_result(completion)

            self.store_queue.submit(record)

        result: Future = Future()
        _fail_into(self.queues[slot].submit(run), result)
        return result

    # -- where one contender moved from the base --------------------------------------

    def score_plan(self, side: str) -> tuple[str | None, str | None]:
        """The identities a score of ``side``'s answer compares: (moved, reference)."""
        this, other = self.contender(side), self.contender(_other(side))
        moved = this if this.adapter is not None else other
        return moved.identity, BASE

    def score(self, side: str) -> scoring.Comparison:
        """Score ``side``'s last answer under a contender with an adapter and under the
        base: this side's contender if it has one, else the other side's."""
        return self.score_later(side).result()

    def score_later(self, side: str) -> Future:
        """``score``, queued on both slots: a Future of the Comparison. Where both sides
        run adapters, the other slot drops its adapter for the scoring and takes it back
        after; both queues wait meanwhile, so nothing else runs on either engine."""
        answer = self.answers.get(side)
        if answer is None or answer.completion is None:
            raise SessionError("no finished answer to score")
        here, there = self.shown[side], self.shown[_other(side)]
        ids = scoring.answer_ids(answer.completion)

        def score():
            this, other = self.contenders[here], self.contenders[there]
            if this.adapter is None:  # the base's answer under the other contender
                base, moved, restore = self.engines[here], self.engines[there], None
            else:
                base, moved = self.engines[there], self.engines[here]
                restore = other if other.adapter is not None else None
                if restore is not None:
                    base.set_adapter(None)
            try:
                # The mean log-ratio is a KL estimate only for the moved model's own samples.
                sampled = answer.params if moved is answer.engine else None
                return scoring.compare(base, moved, answer.messages, ids, tuned_sampling=sampled)
            finally:
                if restore is not None:
                    base.set_adapter(restore.adapter, restore.scale)

        return self._on_both_slots(score)

    # -- votes -------------------------------------------------------------------------

    @property
    def can_vote(self) -> bool:
        return (self.store is not None and self.vote_id is None and bool(self.conversation.turns)
                and all(a is not None and a.completion is not None for a in self.answers.values()))

    def vote(self, choice: str, better_text: str | None = None) -> Changes:
        """Record the user's verdict on the two answers shown; committed on return.

        When the database cannot take it (locked, full), the vote stays pending, the
        error is raised, and calling ``vote`` again (or ``retry_vote``) writes it."""
        if not self.can_vote:
            raise SessionError("nothing to vote on: both answers must be in")
        return self.vote_later(choice, better_text).result()

    def vote_later(self, choice: str, better_text: str | None = None) -> Future:
        """``vote``, queued on the store queue: a Future of its Changes."""
        if not self.can_vote:
            raise SessionError("nothing to vote on: both answers must be in")
        with self._lock:
            self.pending_vote = (choice, better_text)
        return self.retry_vote_later()

    def retry_vote(self) -> Changes:
        return self.retry_vote_later().result()

    def retry_vote_later(self) -> Future:
        """``retry_vote``, queued on the store queue: a Future of its Changes."""
        if self.pending_vote is None:
            raise SessionError("no vote is waiting to be recorded")
        choice, better_text = self.pending_vote
        hidden, record, answers = self.hidden, self._record, dict(self.answers)
        with self._lock:
            self._voting = record

        def write():
            self._write_unsaved()
            vote_id = record.vote(self.store, answers, choice, better_text, hidden)
            try:  # the vote is committed: a count that cannot be read must not undo that
                self.vote_count = self.store.pair_counts()["votes"]
            except Exception:  # noqa: BLE001
                self.vote_count = None
            return vote_id

        def recorded():
            try:
                vote_id = write()
            except (sqlite3.Error, OSError) as exc:
                with self._lock:
                    self._voting = None
                    if self._record is not record:  # the user moved on while it was written
                        self._keep_vote(record, answers, choice, better_text, hidden)
                raise StoreWriteError(f"the database did not take the vote ({exc})") from exc
            with self._lock:
                self._voting = None
                if self._record is record:  # not a conversation begun while it was written
                    self.vote_id, self.pending_vote = vote_id, None
                    self.revealed = True
            return Changes(votes=True, contenders=hidden)

        return self.store_queue.submit(recorded)

    def undo_vote(self) -> Changes:
        return self.undo_vote_later().result()

    def undo_vote_later(self) -> Future:
        """``undo_vote``, queued on the store queue: a Future of its Changes."""
        if self.vote_id is None:
            raise SessionError("no vote to undo")
        vote_id = self.vote_id

        def undo():
            try:
                self.store.undo_vote(vote_id)
            except (sqlite3.Error, OSError) as exc:
                raise StoreWriteError(f"the database did not take the undo ({exc})") from exc
            self.vote_id = None
            return Changes(votes=True)

        return self.store_queue.submit(undo)

    def live_votes(self) -> int:
        """How many votes count now (deleted ones do not)."""
        if self.store is None:
            return 0
        return self.store_queue.run(lambda: self.store.pair_counts()["votes"])

    # -- recording ---------------------------------------------------------------------

    def _write_pending(self) -> None:
        """Write what the store lacks (runs on the store queue): earlier refused votes
        first, then this conversation and its finished answers."""
        if self.store is None:
            return
        self._write_unsaved()
        with self._lock:
            record, answers = self._record, dict(self.answers)
        record.write(self.store, answers)

    def _write_unsaved(self) -> None:
        while self.unsaved_votes:
            self.unsaved_votes[0](self.store)
            self.unsaved_votes.pop(0)

    # -- helpers -----------------------------------------------------------------------

    def _on_both_slots(self, fn: Callable) -> Future:
        """Run ``fn`` on the first slot's queue once the second's has stopped behind the
        work queued before: both engines are ``fn``'s alone, in the order asked, and no
        thread but the first slot's waits. A Future of what ``fn`` returns."""
        first, *others = SLOTS
        with self._submit_lock:  # two callers queue in the same order on every queue
            stops = [self.queues[slot].barrier() for slot in others]

            result: Future = Future()

            def run():
                try:  # done before the other queues go on: what follows sees it done
                    for reached, _ in stops:
                        reached.wait()
                    result.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - the caller's to handle
                    result.set_exception(exc)
                finally:
                    for _, release in stops:
                        release.set()

            self.queues[first].submit(run)
            return result


def _fail_into(work: Future, result: Future) -> None:
    """When ``work`` fails, ``result`` fails with its error (its success sets ``result``
    itself)."""
    def done(f: Future) -> None:
        if f.cancelled():
            result.cancel()
        elif f.exception() is not None:
            result.set_exception(f.exception())

    work.add_done_callback(done)


def _other(side: str) -> str:
    return SIDES[1 - SIDES.index(side)]


def _write_response(store, conversation_id: int, side: str, answer: Answer) -> int:
    done, engine, c = answer.completion, answer.engine, answer.contender
    return store.add_response(
        conversation_id, answer.turn, side, c.role, done.text,
        model=engine.info.name, model_path=str(engine.info.path),
        model_hash=catalog.file_hash(engine.info.path), adapter=c.name if c.adapter else None,
        adapter_path=str(c.adapter) if c.adapter else None,
        adapter_scale=c.scale if c.adapter else None,
        template_name=engine.template.name, template_source=engine.template.source,
        params={**answer.params.to_dict(), "seed": done.seed},
        prompt_messages=answer.messages, n_tokens=done.n_tokens, ttft_s=done.ttft_s,
        tokens_per_s=done.tokens_per_s, finish_reason=done.finish_reason,
    )
