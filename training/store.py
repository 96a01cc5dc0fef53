"""The reward-data store: conversations, both panes' answers, and the user's votes.

One SQLite file, written through sqlite-utils and shaped by its numbered ``Migrations``.
The desktop app and a training job open it at the same time, so it runs in WAL mode
with a busy timeout, and every write takes the write lock up front (``BEGIN
IMMEDIATE``) and commits before the method returns: a vote the UI shows as recorded
is already on disk (``synchronous=FULL``, so it survives a power cut, not just a crash).

Tables:

- ``conversations``: id, uid, created_at, system_prompt, blind
- ``messages``: the user turns both panes share (conversation_id, turn, role, content)
- ``responses``: one answer of one pane, with everything needed to reproduce it (model
  and its sha256, adapter and scale, template, sampling params, the exact prompt
  messages rendered, system message included) and its timings
- ``votes``: which response was shown left and right, the choice (``left``, ``right``,
  ``tie``, ``both_bad``, ``better`` with the user's own answer), blind or not, and
  ``deleted_at`` for a soft delete, so undo is a restore
- ``queues`` and ``queue_items``: prompt sets queued for voting (the Queue tab,
  ``diptych data queue``): each item's prompt, and once answered its conversation and
  both responses, then its vote or that it was skipped. A conversation made for an item
  names its prompt set (``conversations.prompt_set``; null for the panes')

``uid`` columns are random ids that survive export and import (see ``preferences``);
the integer ids are local to one file. Importing this module imports no torch and no
Qt: the desktop app starts in about a second.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database, Migrations

from diptych import paths
from diptych.models.errors import UserError

SIDES = ("left", "right")
ROLES = ("base", "tuned")
CHOICES = ("left", "right", "tie", "both_bad", "better")
BASE = "base"  # the identity of a response made without an adapter
BUSY_TIMEOUT_MS = 10_000  # a training job's import may hold the write lock a moment

migrations = Migrations("diptych")
KNOWN_MIGRATIONS: list[str] = []


class StoreVersionError(UserError, RuntimeError):
    """The database was written by a newer Diptych; this version refuses to touch it."""


class StoreReadOnlyError(UserError, sqlite3.OperationalError):
    """A write to a store in a folder this process cannot write; the message names it."""


class StoreFileError(StoreVersionError, sqlite3.DatabaseError):
    """The file is not a database this version can open (not SQLite, damaged, or of
    another shape); the message names it. A StoreVersionError, so whoever refuses a newer
    database refuses this one the same way, and an sqlite3.DatabaseError."""


def migration(fn):
    """Register ``fn`` as the next numbered migration."""
    KNOWN_MIGRATIONS.append(fn.__name__)
    return migrations()(fn)


@migration
def m001_initial(db: Database) -> None:
    db["conversations"].create(
        {"id": int, "uid": str, "created_at": str, "system_prompt": str, "blind": int},
        pk="id", not_null={"uid", "created_at"},
    )
    db["conversations"].create_index(["uid"], unique=True)
    db["messages"].create(
        {"id": int, "conversation_id": int, "turn": int, "role": str, "content": str},
        pk="id", not_null={"conversation_id", "turn", "role", "content"},
        foreign_keys=[("conversation_id", "conversations")],
    )
    db["messages"].create_index(["conversation_id", "turn"], unique=True)
    db["responses"].create(
        {
            "id": int, "conversation_id": int, "turn": int, "side": str, "role": str,
            "model": str, "model_path": str, "model_sha256": str,
            "adapter": str, "adapter_path": str, "adapter_scale": float,
            "template_name": str, "template_source": str,
            "params": str, "prompt_messages": str, "text": str,
            "n_tokens": int, "ttft_s": float, "tokens_per_s": float,
            "finish_reason": str, "created_at": str,
        },
        pk="id", not_null={"conversation_id", "turn", "side", "role", "text", "created_at"},
        foreign_keys=[("conversation_id", "conversations")],
    )
    db["responses"].create_index(["conversation_id", "turn"])
    db["votes"].create(
        {
            "id": int, "uid": str, "conversation_id": int, "turn": int,
            "left_response_id": int, "right_response_id": int, "choice": str,
            "blind": int, "better_text": str, "created_at": str, "deleted_at": str,
        },
        pk="id",
        not_null={"uid", "conversation_id", "turn", "left_response_id",
                  "right_response_id", "choice", "blind", "created_at"},
        foreign_keys=[
            ("conversation_id", "conversations"),
            ("left_response_id", "responses"),
            ("right_response_id", "responses"),
        ],
    )
    db["votes"].create_index(["uid"], unique=True)
    db["votes"].create_index(["created_at"])


@migration
def m002_vote_queues(db: Database) -> None:
    db["conversations"].add_column("prompt_set", str)
    db["queues"].create(
        {"id": int, "uid": str, "source": str, "title": str, "created_at": str},
        pk="id", not_null={"uid", "source", "title", "created_at"},
    )
    db["queue_items"].create(
        {"id": int, "queue_id": int, "position": int, "prompt": str, "conversation_id": int,
         "left_response_id": int, "right_response_id": int, "vote_id": int, "skipped": int},
        pk="id", not_null={"queue_id", "position", "prompt", "skipped"}, defaults={"skipped": 0},
        foreign_keys=[("queue_id", "queues"), ("conversation_id", "conversations"),
                      ("left_response_id", "responses"), ("right_response_id", "responses"),
                      ("vote_id", "votes")],
    )
    db["queue_items"].create_index(["queue_id", "position"], unique=True)


def well_formed_prompt(messages) -> bool:
    """Whether ``messages`` is a prompt a model can answer: a non-empty list of messages
    (text role and content) that ends with the user's. A row with any other prompt would
    train, then break the job's drift measurement, and every later job's."""
    return (isinstance(messages, list) and bool(messages)
            and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str) for m in messages)
            and messages[-1]["role"] == "user")


def usable_vote(vote: dict) -> bool:
    """Whether both sides of a vote (a row of ``Store.votes()``) answered a well-formed prompt."""
    return all(well_formed_prompt(vote[side]["prompt_messages"]) for side in ("left", "right"))


def now() -> str:
    """An ISO 8601 UTC timestamp with microseconds; sorts as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_uid() -> str:
    return uuid.uuid4().hex


def identity(response: dict) -> str:
    """Who made a response: its adapter's name, or ``base``."""
    return response["adapter"] or BASE


def check_version(path: Path) -> None:
    """Refuse a database with migrations this code does not know, without writing to it.

    A read-only connection: even closing it cannot checkpoint a WAL into the file.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    conn = _connect_read_only(path)
    try:
        applied = [m.name for m in migrations.applied(Database(conn, execute_plugins=False))]
    finally:
        conn.close()
    unknown = [name for name in applied if name not in KNOWN_MIGRATIONS]
    if unknown:
        raise StoreVersionError(
            f"{path} was written by a newer version of Diptych (schema migrations "
            f"{', '.join(unknown)} are unknown here); upgrade Diptych to open it. "
            "The file was not changed."
        )


def _read_only_dir(path: Path) -> bool:
    """An existing database in a folder this process cannot write (permissions, a
    read-only mount): SQLite could not create the WAL's side files there."""
    return path.exists() and not os.access(path.parent, os.W_OK)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # In a folder nobody can write, no WAL can appear: reading the file as immutable is
    # safe and needs no side files, which SQLite could not create there.
    immutable = "&immutable=1" if _read_only_dir(path) else ""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True,
                           check_same_thread=False)


def _decode_response(row: dict) -> dict:
    return {**row, "params": json.loads(row["params"] or "{}"),
            "prompt_messages": json.loads(row["prompt_messages"] or "[]")}


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with LIKE's wildcards escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# One query serves votes() and vote_by_id(): each row joined with both responses' identities
# and the user's message for that turn, filtered by optional named parameters.
VOTES_SQL = """
SELECT v.*, c.uid AS conversation_uid, c.prompt_set, m.content AS prompt
FROM votes v
JOIN conversations c ON c.id = v.conversation_id
JOIN responses l ON l.id = v.left_response_id
JOIN responses r ON r.id = v.right_response_id
LEFT JOIN messages m ON m.conversation_id = v.conversation_id AND m.turn = v.turn
WHERE (:id IS NULL OR v.id = :id)
  AND (:include_deleted OR v.deleted_at IS NULL)
  AND (:choice IS NULL OR v.choice = :choice)
  AND (:adapter IS NULL OR coalesce(l.adapter, 'base') = :adapter
       OR coalesce(r.adapter, 'base') = :adapter)
  AND (:text IS NULL OR m.content LIKE :text ESCAPE '\\' OR l.text LIKE :text ESCAPE '\\'
       OR r.text LIKE :text ESCAPE '\\' OR v.better_text LIKE :text ESCAPE '\\')
ORDER BY v.created_at, v.id
"""

CONVERSATIONS_SQL = """
SELECT c.*,
  (SELECT content FROM messages WHERE conversation_id = c.id ORDER BY turn LIMIT 1) AS title,
  (SELECT count(*) FROM messages WHERE conversation_id = c.id) AS n_turns,
  (SELECT count(*) FROM votes WHERE conversation_id = c.id AND deleted_at IS NULL) AS n_votes
FROM conversations c
WHERE :text IS NULL OR c.system_prompt LIKE :text ESCAPE '\\'
  OR EXISTS (SELECT 1 FROM messages WHERE conversation_id = c.id AND content LIKE :text ESCAPE '\\')
  OR EXISTS (SELECT 1 FROM responses WHERE conversation_id = c.id AND text LIKE :text ESCAPE '\\')
ORDER BY c.created_at DESC, c.id DESC
"""


class Store:
    """One open reward-data database; use it from one thread at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        conn = None
        try:
            check_version(self.path)
            self.read_only = _read_only_dir(self.path)
            if self.read_only:  # still readable: stats, export, the Data and Stats tabs
                conn = _connect_read_only(self.path)
                self.db = Database(conn, execute_plugins=False)
                if migrations.pending(self.db):
                    raise StoreReadOnlyError(f"{self.path}: an older database in a read-only "
                                             "folder; it needs an upgrade that cannot be written")
                return
            # Any one thread at a time may use the store (the desktop runs it off the UI thread).
            conn = sqlite3.connect(self.path, check_same_thread=False)
            self.db = Database(conn, execute_plugins=False)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.enable_wal()
            if migrations.pending(self.db):
                with self.transaction():  # two processes opening a new file migrate once
                    migrations.apply(self.db)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise  # busy, not broken: the caller may try again
            damaged = any(w in str(exc) for w in ("not a database", "malformed", "corrupt"))
            why = ": not a Diptych database, or a damaged one" if damaged else ""
            raise StoreFileError(f"{self.path}: {exc}{why}") from exc

    @classmethod
    def open(cls, data_dir: str | Path | None = None) -> Store:
        """The store in the data directory (``--data-dir``, ``DIPTYCH_HOME``, or the default)."""
        return cls(paths.db_path(data_dir))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """Group writes: all of them are committed together, or none.

        ``BEGIN IMMEDIATE`` takes the write lock before the first read. A deferred
        transaction that reads first cannot wait for the lock once another process has
        written meanwhile: SQLite fails it at once with "database is locked".
        """
        if self.read_only:
            raise StoreReadOnlyError(f"{self.path.parent}: the data folder is read-only; "
                                     "nothing can be recorded there")
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()

    def schema_version(self) -> int:
        return len(migrations.applied(self.db))

    # -- writes ---------------------------------------------------------------------

    def new_conversation(self, system_prompt: str = "", blind: bool = False, *,
                         uid: str | None = None, created_at: str | None = None,
                         prompt_set: str | None = None) -> int:
        """A new conversation; ``prompt_set``: the source of the queue it answers an item of."""
        row = {"uid": uid or new_uid(), "created_at": created_at or now(),
               "system_prompt": system_prompt or "", "blind": int(bool(blind)),
               "prompt_set": prompt_set}
        with self.transaction():
            return self.db.table("conversations").insert(row).last_pk

    def add_user_message(self, conversation_id: int, turn: int, content: str) -> int:
        """Record the user's message for ``turn``; adding the same message again is a no-op."""
        if not content.strip():
            raise ValueError("a user message cannot be empty")
        with self.transaction():
            for existing in self.db.table("messages").rows_where(
                    "conversation_id = ? AND turn = ?", [conversation_id, turn]):
                if existing["content"] != content:
                    raise ValueError(f"conversation {conversation_id} turn {turn} "
                                     "already has a different user message")
                return existing["id"]
            row = {"conversation_id": conversation_id, "turn": turn, "role": "user",
                   "content": content}
            return self.db.table("messages").insert(row).last_pk

    def add_response(self, conversation_id: int, turn: int, side: str, role: str, text: str,
                     *, model: str | None, model_path: str | None, model_hash: str | None,
                     adapter: str | None, adapter_path: str | None,
                     adapter_scale: float | None, template_name: str | None,
                     template_source: str | None, params: dict, prompt_messages: list[dict],
                     n_tokens: int | None, ttft_s: float | None,
                     tokens_per_s: float | None, finish_reason: str | None,
                     created_at: str | None = None) -> int:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not well_formed_prompt(prompt_messages):
            raise ValueError("prompt_messages must be a non-empty list of messages ending with "
                             f"the user's, not {str(prompt_messages)[:80]}")
        row = {
            "conversation_id": conversation_id, "turn": turn, "side": side, "role": role,
            "model": model, "model_path": model_path, "model_sha256": model_hash,
            "adapter": adapter, "adapter_path": adapter_path, "adapter_scale": adapter_scale,
            "template_name": template_name, "template_source": template_source,
            "params": params, "prompt_messages": prompt_messages, "text": text,
            "n_tokens": n_tokens, "ttft_s": ttft_s, "tokens_per_s": tokens_per_s,
            "finish_reason": finish_reason, "created_at": created_at or now(),
        }
        with self.transaction():
            return self.db.table("responses").insert(row).last_pk

    def record_vote(self, left_response_id: int, right_response_id: int, choice: str,
                    blind: bool, better_text: str | None = None, *,
                    uid: str | None = None, created_at: str | None = None) -> int:
        """Record the user's verdict on two answers to the same turn; durable on return."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, not {choice!r}")
        if (choice == "better") != bool(better_text and better_text.strip()):
            raise ValueError("a 'better' vote needs the user's answer, and only it has one")
        with self.transaction():
            left = self._response(left_response_id)
            right = self._response(right_response_id)
            if (left["side"], right["side"]) != SIDES:
                raise ValueError("the left response must be a left one, the right a right one")
            if (left["conversation_id"], left["turn"]) != (right["conversation_id"], right["turn"]):
                raise ValueError("both responses must answer the same turn")
            row = {
                "uid": uid or new_uid(), "conversation_id": left["conversation_id"],
                "turn": left["turn"], "left_response_id": left_response_id,
                "right_response_id": right_response_id, "choice": choice,
                "blind": int(bool(blind)), "better_text": better_text if choice == "better" else None,
                "created_at": created_at or now(), "deleted_at": None,
            }
            return self.db.table("votes").insert(row).last_pk

    def delete_vote(self, vote_id: int) -> None:
        """Soft delete: the vote stops counting, and ``restore_vote`` brings it back."""
        self._set_deleted(vote_id, now())

    def undo_vote(self, vote_id: int) -> None:
        self.delete_vote(vote_id)

    def restore_vote(self, vote_id: int) -> None:
        self._set_deleted(vote_id, None)

    def _set_deleted(self, vote_id: int, when: str | None) -> None:
        with self.transaction():
            self.vote_by_id(vote_id)  # raises KeyError for an unknown id
            self.db.table("votes").update(vote_id, {"deleted_at": when})

    # -- reads ----------------------------------------------------------------------

    def _response(self, response_id: int) -> dict:
        rows = list(self.db.query("SELECT * FROM responses WHERE id = ?", [response_id]))
        if not rows:
            raise KeyError(f"no response {response_id}")
        return _decode_response(rows[0])

    def _responses(self, ids: set[int]) -> dict[int, dict]:
        rows = self.db.query("SELECT * FROM responses WHERE id IN (SELECT value FROM json_each(?))",
                             [json.dumps(sorted(ids))])
        return {row["id"]: _decode_response(row) for row in rows}

    def _votes(self, **filters) -> list[dict]:
        params = {"id": None, "include_deleted": False, "choice": None, "adapter": None,
                  "text": None, **filters}
        if params["text"]:
            params["text"] = _like(params["text"])
        rows = list(self.db.query(VOTES_SQL, params))
        responses = self._responses({r[k] for r in rows
                                     for k in ("left_response_id", "right_response_id")})
        for row in rows:
            row["blind"] = bool(row["blind"])
            row["left"] = responses[row["left_response_id"]]
            row["right"] = responses[row["right_response_id"]]
        return rows

    def votes(self, adapter: str | None = None, choice: str | None = None,
              text: str | None = None, include_deleted: bool = False) -> list[dict]:
        """Votes, oldest first, each with ``prompt`` (the user's message) and full
        ``left`` and ``right`` response dicts.

        ``adapter`` keeps votes where either side was made by that adapter (``"base"``:
        by no adapter); ``text`` searches the prompt, both answers and a better answer.
        """
        return self._votes(adapter=adapter, choice=choice, text=text or None,
                           include_deleted=include_deleted)

    def vote_by_id(self, vote_id: int) -> dict:
        """The vote ``vote_id``, deleted or not, as ``votes()`` gives it; KeyError if none."""
        rows = self._votes(id=vote_id, include_deleted=True)
        if not rows:
            raise KeyError(f"no vote {vote_id}")
        return rows[0]

    def conversations(self, text: str | None = None) -> list[dict]:
        """Conversations, newest first, with a title (first message), turn and vote counts."""
        rows = list(self.db.query(CONVERSATIONS_SQL, {"text": _like(text) if text else None}))
        for row in rows:
            row["blind"] = bool(row["blind"])
        return rows

    def conversation(self, conversation_id: int) -> dict:
        rows = list(self.db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
        if not rows:
            raise KeyError(f"no conversation {conversation_id}")
        where, args = "conversation_id = ?", [conversation_id]
        return {
            **rows[0],
            "blind": bool(rows[0]["blind"]),
            "messages": list(self.db.table("messages").rows_where(where, args, order_by="turn")),
            "responses": [_decode_response(r) for r in
                          self.db.table("responses").rows_where(where, args, order_by="turn, id")],
            "votes": [{**v, "blind": bool(v["blind"])} for v in
                      self.db.table("votes").rows_where(where, args, order_by="created_at, id")],
        }

    def left_out(self) -> str:
        """What the data loaders say after the store's name about the live votes they
        leave out, those with a side whose prompt is not one (``well_formed_prompt``)."""
        n = sum(1 for vote in self.votes() if not usable_vote(vote))
        return f" ({n} vote{'s' * (n != 1)} left out: an empty or damaged prompt)" if n else ""

    def pair_counts(self, since: str | None = None) -> dict:
        """Live votes by choice (cast after ``since``, an ISO 8601 time, when given), and
        ``pairs``: the DPO pairs they make (a better answer makes two: it beats each shown
        answer)."""
        counts = {choice: 0 for choice in CHOICES}
        if since is None:
            for row in self.db.query("SELECT choice, count(*) AS n FROM votes "
                                     "WHERE deleted_at IS NULL GROUP BY choice"):
                counts[row["choice"]] = row["n"]
        else:  # compared as times, not text: an imported vote may carry another UTC offset
            after = datetime.fromisoformat(since)
            for row in self.db.query("SELECT choice, created_at FROM votes WHERE deleted_at IS NULL"):
                if datetime.fromisoformat(row["created_at"]) > after:
                    counts[row["choice"]] += 1
        counts["pairs"] = counts["left"] + counts["right"] + 2 * counts["better"]
        counts["votes"] = sum(counts[c] for c in CHOICES)
        return counts

    def mean_answer_tokens(self, since: str | None = None) -> float:
        """The mean length in tokens of a voted answer with its prompt (the prompt, and an
        answer of an older store without a count, at about four characters a token): what
        a job's cost grows with (``training.estimate``)."""
        after = datetime.fromisoformat(since) if since else None
        total = n = 0
        for row in self.db.query(
                "SELECT v.created_at, coalesce(r.n_tokens, length(r.text) / 4) "
                "+ length(r.prompt_messages) / 4 AS tokens FROM votes v JOIN responses r "
                "ON r.id IN (v.left_response_id, v.right_response_id) WHERE v.deleted_at IS NULL"):
            if after is None or datetime.fromisoformat(row["created_at"]) > after:
                total, n = total + (row["tokens"] or 0), n + 1
        return total / n if n else 0.0

    def recent_prompts(self, limit: int = 100) -> list[list[dict]]:
        """The distinct prompts the panes answered, newest first, as message lists (a row
        of an older store whose prompt is not one is left out: ``well_formed_prompt``)."""
        rows = self.db.query(
            "SELECT prompt_messages FROM responses GROUP BY prompt_messages "
            "ORDER BY max(created_at) DESC, max(id) DESC")
        prompts = []
        for row in rows:
            if len(prompts) == limit:
                break
            try:
                prompt = json.loads(row["prompt_messages"] or "[]")
            except (ValueError, RecursionError):
                continue
            if well_formed_prompt(prompt):
                prompts.append(prompt)
        return prompts

    # -- vote queues ----------------------------------------------------------------

    def new_queue(self, source: str, title: str, prompts: list[list[dict]]) -> int:
        """Queue ``prompts`` (message lists) for voting, all or none; returns the queue's id.
        ``source``: where they came from (stored on each conversation answering one)."""
        if not prompts:
            raise ValueError("a queue needs at least one prompt")
        for number, prompt in enumerate(prompts, 1):
            if not well_formed_prompt(prompt):
                raise ValueError(f"prompt {number} is not a list of messages ending with the "
                                 f"user's: {str(prompt)[:80]}")
        with self.transaction():
            queue_id = self.db.table("queues").insert(
                {"uid": new_uid(), "source": source, "title": title, "created_at": now()}).last_pk
            self.db.table("queue_items").insert_all(
                {"queue_id": queue_id, "position": position, "prompt": prompt, "skipped": 0}
                for position, prompt in enumerate(prompts))
            return queue_id

    def answer_queue_item(self, item_id: int, conversation_id: int, left_response_id: int,
                          right_response_id: int) -> None:
        """The conversation and both responses that answer queue item ``item_id``."""
        with self.transaction():
            self.db.table("queue_items").update(item_id, {
                "conversation_id": conversation_id, "left_response_id": left_response_id,
                "right_response_id": right_response_id})

    def vote_queue_item(self, item_id: int, choice: str, blind: bool,
                        better_text: str | None = None) -> int:
        """Record the verdict on queue item ``item_id``'s pair (a vote like the panes'), and
        that it is decided, in one transaction; returns the vote's id."""
        with self.transaction():
            item = self.db.table("queue_items").get(item_id)
            if item["left_response_id"] is None:
                raise ValueError(f"queue item {item_id} has not been answered")
            vote_id = self.record_vote(item["left_response_id"], item["right_response_id"],
                                       choice, blind, better_text)
            self.db.table("queue_items").update(item_id, {"vote_id": vote_id, "skipped": 0})
            return vote_id

    def skip_queue_item(self, item_id: int) -> None:
        with self.transaction():
            self.db.table("queue_items").update(item_id, {"skipped": 1})

    def reopen_queue_item(self, item_id: int) -> None:
        """Queue item ``item_id`` undecided again: its vote undone (soft-deleted, as the
        panes' Undo does), its skip forgotten."""
        with self.transaction():
            item = self.db.table("queue_items").get(item_id)
            if item["vote_id"] is not None:
                self.undo_vote(item["vote_id"])
            self.db.table("queue_items").update(item_id, {"vote_id": None, "skipped": 0})

    def queues(self) -> list[dict]:
        """The queues, newest first, each with how many items it has, how many are
        answered and how many decided (voted on or skipped)."""
        return list(self.db.query(
            "SELECT q.*, count(i.id) AS n_items, count(i.left_response_id) AS n_answered, "
            "sum(i.skipped OR v.id IS NOT NULL) AS n_decided FROM queues q "
            "JOIN queue_items i ON i.queue_id = q.id "
            "LEFT JOIN votes v ON v.id = i.vote_id AND v.deleted_at IS NULL "
            "GROUP BY q.id ORDER BY q.created_at DESC, q.id DESC"))

    def queue(self, queue_id: int) -> dict:
        rows = list(self.db.query("SELECT * FROM queues WHERE id = ?", [queue_id]))
        if not rows:
            raise KeyError(f"no queue {queue_id}")
        return rows[0]

    def queue_items(self, queue_id: int) -> list[dict]:
        """Queue ``queue_id``'s items in order: ``prompt`` (a message list), ``blind`` (of
        its conversation, once answered), ``left`` and ``right`` (response dicts, or None),
        ``vote_id`` and ``choice`` of its live vote (None: none, or deleted since), ``skipped``."""
        rows = list(self.db.query(
            "SELECT i.*, c.blind, v.choice FROM queue_items i "
            "LEFT JOIN conversations c ON c.id = i.conversation_id "
            "LEFT JOIN votes v ON v.id = i.vote_id AND v.deleted_at IS NULL "
            "WHERE i.queue_id = ? ORDER BY i.position", [queue_id]))
        responses = self._responses({r[f"{side}_response_id"] for r in rows for side in SIDES
                                     if r[f"{side}_response_id"] is not None})
        for row in rows:
            row["prompt"] = json.loads(row["prompt"])
            row["blind"] = bool(row["blind"])
            row["skipped"] = bool(row["skipped"])
            if row["choice"] is None:
                row["vote_id"] = None
            for side in SIDES:
                row[side] = responses.get(row[f"{side}_response_id"])
        return rows
