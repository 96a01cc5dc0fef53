"""A prompt set voted through: both contenders answer each prompt ahead of the person.

A queue's prompts are in the store (``Store.new_queue``). Each item becomes a
conversation of its own, answered by both of a ``Session``'s slots on their work queues
as the panes answer: the slots' contenders, the shared settings and template, and in
blind mode sides drawn for that item (the panes draw them per conversation). The
conversation, both answers and the item's link to them are written in one transaction,
so a process killed at any moment leaves an item answered whole or not at all. The
person's verdict is a vote like those the panes record; its conversation names the
prompt set (``prompt_set``).

The store holds the state: the items are read back from it, and the person's place is
the first item neither voted on nor skipped. ``vote_later``, ``skip_later`` and
``back_later`` move the place at once and return a Future of their write (on the
session's store queue, in the order asked); a write the database refuses puts the
place back on that item.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Callable

from .conversation import SIDES, Conversation
from .errors import one_line
from .session import BASE, SLOTS, Answer, Changes, Record, Session, SessionError, StoreWriteError


@dataclass
class Item:
    """One prompt of a queue, and what became of it."""

    id: int
    position: int
    prompt: list[dict]  # messages, the last one the user's
    texts: dict[str, str] | None = None  # side -> the answer shown there, once answered
    names: dict[str, str] = field(default_factory=dict)  # side -> who answered: base or an adapter
    blind: bool = False  # answered in blind mode: the names stay hidden until the vote
    choice: str | None = None  # the verdict (set at once; ``vote_id`` once committed)
    vote_id: int | None = None
    skipped: bool = False
    error: str | None = None  # why it could not be answered (in this process)

    @classmethod
    def from_row(cls, row: dict) -> Item:
        """An item as ``Store.queue_items`` gives it."""
        item = cls(row["id"], row["position"], row["prompt"], blind=row["blind"],
                   choice=row["choice"], vote_id=row["vote_id"], skipped=row["skipped"])
        if row["left"] is not None:
            item.names = {side: row[side]["adapter"] or BASE for side in SIDES}
            item.texts = {side: row[side]["text"] for side in SIDES}
        return item

    @property
    def answered(self) -> bool:
        return self.texts is not None

    @property
    def decided(self) -> bool:
        return self.skipped or self.choice is not None


def as_conversation(prompt: list[dict], system: str) -> Conversation:
    """``prompt`` as a conversation both sides continue alike: its own system message, or
    else ``system``; its earlier answers shared; its last message the turn to answer."""
    own = [m["content"] for m in prompt if m["role"] == "system"]
    conversation = Conversation(system=own[0] if own else system)
    for message in prompt:
        if message["role"] == "user":
            conversation.add_user(message["content"])
        elif message["role"] == "assistant" and conversation.turns:
            for side in SIDES:
                conversation.set_answer(side, message["content"])
    return conversation


class VoteQueue:
    def __init__(self, session: Session, queue: dict, rows: list[dict]):
        """Queue ``queue`` (a row of ``Store.queues``) with its items (``Store.queue_items``),
        answered and voted on through ``session``."""
        self.session = session
        self.id, self.source, self.title = queue["id"], queue["source"], queue["title"]
        self.items = [Item.from_row(row) for row in rows]
        self._lock = threading.Lock()  # the items and the place, across the queues' threads
        self.position = self._next_undecided(-1)

    @property
    def current(self) -> Item | None:
        """The item on screen (None: every item is decided)."""
        return self.items[self.position] if self.position < len(self.items) else None

    @property
    def ready(self) -> int:
        """Answered pairs waiting for the person, the one on screen included."""
        return sum(1 for item in self.items[self.position:] if item.answered and not item.decided)

    def to_answer(self, ahead: int) -> Item | None:
        """The next item to answer while fewer than ``ahead`` pairs wait: the first from
        the person's place on (then from the start) that is neither answered, decided nor
        failed."""
        if self.ready >= ahead:
            return None
        order = self.items[self.position:] + self.items[:self.position]
        return next((item for item in order
                     if not item.answered and not item.decided and item.error is None), None)

    # -- answering ---------------------------------------------------------------------

    def answer_later(self, item: Item, cancel: threading.Event | None = None) -> Future:
        """Both slots answer ``item`` at once, each on its queue; then the store queue
        records the pair with the item. A Future of the item: answered, or not when
        ``cancel`` stopped an answer (nothing is recorded then)."""
        s = self.session
        if len(s.engines) < len(SLOTS):
            raise SessionError("no model is loaded yet")
        conversation = as_conversation(item.prompt, s.settings.system_prompt)
        shown = dict(zip(SIDES, random.sample(SLOTS, 2) if s.blind else SLOTS))
        record = Record(conversation, blind=s.blind, prompt_set=self.source)
        params, turn = s.settings.params, len(conversation.turns) - 1
        answers: dict[str, Answer] = {}
        result: Future = Future()
        lock = threading.Lock()

        def answer(side: str) -> None:
            slot = shown[side]
            engine, messages = s.engines[slot], conversation.messages(side)
            done = Answer(messages, params, s.contenders[slot], engine, turn)
            done.completion = engine.generate(messages, params, cancel)
            with lock:
                answers[side] = done
                if len(answers) == len(SIDES):
                    s.store_queue.submit(write)

        def write() -> None:
            try:
                if all(a.completion.finish_reason != "cancelled" for a in answers.values()):
                    self._record(item, record, answers)
                result.set_result(item)
            except BaseException as exc:  # noqa: BLE001 - the caller's to handle
                fail(exc)

        def fail(exc: BaseException) -> None:
            with lock:
                if not result.done():
                    item.error = one_line(exc)
                    result.set_exception(exc)

        def settle(work: Future) -> None:
            error = CancelledError() if work.cancelled() else work.exception()
            if error is not None:
                fail(error)

        for side in SIDES:
            s.queues[shown[side]].submit(answer, side).add_done_callback(settle)
        return result

    def _record(self, item: Item, record: Record, answers: dict[str, Answer]) -> None:
        store = self.session.store
        try:
            with store.transaction():
                record.write(store, answers)
                store.answer_queue_item(item.id, record.id, answers["left"].response_id,
                                        answers["right"].response_id)
        except (sqlite3.Error, OSError) as exc:
            raise StoreWriteError(f"the database did not take the answers ({exc})") from exc
        with self._lock:
            item.names = {side: answers[side].contender.identity for side in SIDES}
            item.blind = record.blind
            item.texts = {side: answers[side].completion.text for side in SIDES}

    # -- the person's verdicts ---------------------------------------------------------

    def vote_later(self, choice: str, better_text: str | None = None) -> Future:
        """Record ``choice`` on the pair on screen (``better``: with ``better_text``) and move
        on at once; a Future of the Changes, done once the vote is committed."""
        item = self.current
        if item is None or not item.answered:
            raise SessionError("nothing to vote on: the pair is not answered yet")
        with self._lock:
            item.choice = choice
            self.position = self._next_undecided(item.position)

        def write() -> Changes:
            vote_id = self.session.store.vote_queue_item(item.id, choice, item.blind, better_text)
            with self._lock:
                if item.choice == choice:  # not gone back on meanwhile
                    item.vote_id = vote_id
            return Changes(votes=True, queue=True)

        return self._write(item, write, lambda: setattr(item, "choice", None))

    def skip_later(self) -> Future:
        """Pass over the item on screen (answered or not) and move on at once."""
        item = self.current
        if item is None:
            raise SessionError("nothing to skip: every prompt is decided")
        with self._lock:
            item.skipped = True
            self.position = self._next_undecided(item.position)

        def write() -> Changes:
            self.session.store.skip_queue_item(item.id)
            return Changes(queue=True)

        return self._write(item, write, lambda: setattr(item, "skipped", False))

    def back_later(self) -> Future:
        """Go back to the last item decided before the one on screen, undecided again: its
        vote undone (or its skip forgotten), to be voted on anew."""
        earlier = [item for item in self.items[:self.position] if item.decided]
        if not earlier:
            raise SessionError("nothing to go back to")
        item = earlier[-1]
        was = (item.choice, item.vote_id, item.skipped)
        with self._lock:
            item.choice, item.vote_id, item.skipped = None, None, False
            self.position = item.position

        def write() -> Changes:
            self.session.store.reopen_queue_item(item.id)
            return Changes(votes=was[0] is not None, queue=True)

        def undo() -> None:
            item.choice, item.vote_id, item.skipped = was

        return self._write(item, write, undo, back=True)

    def forget_deleted(self, rows: list[dict]) -> None:
        """The items' committed votes that were deleted elsewhere since (the Data tab) are
        undecided again; ``rows``: ``Store.queue_items`` read now."""
        live = {row["id"]: row["vote_id"] for row in rows}
        with self._lock:
            for item in self.items:
                if item.vote_id is not None and live.get(item.id) != item.vote_id:
                    item.vote_id = item.choice = None

    def _write(self, item: Item, write: Callable[[], Changes], undo: Callable[[], None],
               back: bool = False) -> Future:
        """``write()`` on the store queue; when the database refuses it, ``undo()`` and the
        place back where the write had left it."""
        def run() -> Changes:
            try:
                return write()
            except (sqlite3.Error, OSError) as exc:
                with self._lock:
                    undo()
                    self.position = self._next_undecided(item.position) if back else item.position
                raise StoreWriteError(f"the database did not take it ({exc})") from exc

        return self.session.store_queue.submit(run)

    def _next_undecided(self, after: int) -> int:
        """The first undecided item after position ``after``, then from the start; the
        queue's length when every item is decided."""
        n = len(self.items)
        return next((i for i in [*range(after + 1, n), *range(after + 1)]
                     if not self.items[i].decided), n)
