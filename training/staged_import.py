"""Write many checked votes into the store while holding its write lock only briefly.

An import of 100,000 lines written row by row inside one transaction held the write lock
for as long as it ran, so every vote from the app meanwhile waited and then failed. Here
the rows are first laid out in an in-memory database attached to the store's connection
(writing there takes no lock on the store's file), and one short final transaction copies
them over with a few INSERT ... SELECT statements. It stays all or nothing: the copy is one
transaction, and a process killed while staging leaves nothing behind.
"""

from __future__ import annotations

from sqlite_utils.db import jsonify_if_needed

from .store import SIDES, Store

_RESPONSE_COLUMNS = (
    "turn", "side", "role", "model", "model_path", "model_sha256", "adapter", "adapter_path",
    "adapter_scale", "template_name", "template_source", "params", "prompt_messages", "text",
    "n_tokens", "ttft_s", "tokens_per_s", "finish_reason", "created_at")

_STAGE_SCHEMA = f"""
CREATE TABLE stage.conversations (sid INTEGER PRIMARY KEY, id INTEGER, uid TEXT UNIQUE,
    created_at TEXT, system_prompt TEXT, blind INTEGER);
CREATE TABLE stage.messages (conversation_sid INTEGER, turn INTEGER, content TEXT,
    line INTEGER, PRIMARY KEY (conversation_sid, turn));
CREATE TABLE stage.responses (sid INTEGER PRIMARY KEY, conversation_sid INTEGER,
    {", ".join(_RESPONSE_COLUMNS)});
CREATE TABLE stage.votes (uid TEXT PRIMARY KEY, conversation_sid INTEGER, turn INTEGER,
    left_sid INTEGER, right_sid INTEGER, choice TEXT, blind INTEGER, better_text TEXT,
    created_at TEXT);
"""


class ConflictError(ValueError):
    """A staged row disagrees with what the store already holds; ``line`` says where."""

    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line = line


def _user_turns(prompt: list[dict]) -> list[str]:
    return [m["content"] for m in prompt if m["role"] == "user"]


def _stage(store: Store, votes: list[tuple[int, dict]]) -> None:
    conversations: dict[str, int] = {}
    messages, responses, vote_rows = {}, [], []
    for line, vote in votes:
        prompt = vote["prompt"]
        sid = conversations.get(vote["conversation_uid"])
        if sid is None:
            sid = conversations[vote["conversation_uid"]] = len(conversations) + 1
            system = prompt[0]["content"] if prompt[0]["role"] == "system" else ""
            created = min(vote[s]["created_at"] for s in SIDES)
            store.db.execute(
                "INSERT INTO stage.conversations (sid, uid, created_at, system_prompt, blind) "
                "VALUES (?, ?, ?, ?, ?)",
                [sid, vote["conversation_uid"], created, system, int(bool(vote["blind"]))])
        for turn, content in enumerate(_user_turns(prompt)):
            messages.setdefault((sid, turn), (sid, turn, content, line))
        ids = []
        for side in SIDES:
            response = vote[side] | {"model_sha256": vote[side]["model_hash"], "turn": vote["turn"]}
            ids.append(len(responses) + 1)
            responses.append([ids[-1], sid] + [jsonify_if_needed(response[c]) for c in _RESPONSE_COLUMNS])
        vote_rows.append([vote["uid"], sid, vote["turn"], *ids, vote["choice"],
                          int(bool(vote["blind"])), vote["better_text"], vote["created_at"]])
    store.db.conn.executemany("INSERT INTO stage.messages VALUES (?, ?, ?, ?)", messages.values())
    marks = ", ".join("?" * (2 + len(_RESPONSE_COLUMNS)))
    store.db.conn.executemany(f"INSERT INTO stage.responses VALUES ({marks})", responses)
    store.db.conn.executemany("INSERT INTO stage.votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", vote_rows)
    store.db.conn.commit()


def _copy(store: Store) -> int:
    """Inside the store's write transaction: the staged votes the store lacks, copied over."""
    run = store.db.execute
    run("DELETE FROM stage.votes WHERE uid IN (SELECT uid FROM main.votes)")
    run("UPDATE stage.conversations SET id = "
        "(SELECT id FROM main.conversations AS m WHERE m.uid = stage.conversations.uid)")
    conflict = run(
        "SELECT s.line, c.uid, s.turn FROM stage.messages AS s "
        "JOIN stage.conversations AS c ON c.sid = s.conversation_sid "
        "JOIN main.messages AS m ON m.conversation_id = c.id AND m.turn = s.turn "
        "WHERE m.content != s.content AND c.sid IN (SELECT conversation_sid FROM stage.votes) "
        "LIMIT 1").fetchone()
    if conflict:
        line, uid, turn = conflict
        raise ConflictError(line, f"conversation {uid} turn {turn} already has a different "
                                  "user message in the store")
    # New rows get ids above the store's own; the staged ids keep them unique.
    run("UPDATE stage.conversations SET id = sid + (SELECT coalesce(max(id), 0) FROM main.conversations) "
        "WHERE id IS NULL AND sid IN (SELECT conversation_sid FROM stage.votes)")
    run("INSERT INTO main.conversations (id, uid, created_at, system_prompt, blind) "
        "SELECT id, uid, created_at, system_prompt, blind FROM stage.conversations "
        "WHERE id NOT IN (SELECT id FROM main.conversations) AND id IS NOT NULL")
    run("INSERT INTO main.messages (conversation_id, turn, role, content) "
        "SELECT c.id, s.turn, 'user', s.content FROM stage.messages AS s "
        "JOIN stage.conversations AS c ON c.sid = s.conversation_sid "
        "WHERE c.sid IN (SELECT conversation_sid FROM stage.votes) "
        "AND NOT EXISTS (SELECT 1 FROM main.messages AS m WHERE m.conversation_id = c.id AND m.turn = s.turn)")
    offset = run("SELECT coalesce(max(id), 0) FROM main.responses").fetchone()[0]
    columns = ", ".join(_RESPONSE_COLUMNS)
    run(f"INSERT INTO main.responses (id, conversation_id, {columns}) "
        f"SELECT r.sid + ?, c.id, {', '.join('r.' + c for c in _RESPONSE_COLUMNS)} "
        "FROM stage.responses AS r JOIN stage.conversations AS c ON c.sid = r.conversation_sid "
        "WHERE r.sid IN (SELECT left_sid FROM stage.votes UNION SELECT right_sid FROM stage.votes)",
        [offset])
    lines = run("SELECT coalesce(sum(CASE choice WHEN 'better' THEN 2 ELSE 1 END), 0) "
                "FROM stage.votes").fetchone()[0]
    run(
        "INSERT INTO main.votes (uid, conversation_id, turn, left_response_id, right_response_id, "
        "choice, blind, better_text, created_at, deleted_at) "
        "SELECT v.uid, c.id, v.turn, v.left_sid + ?, v.right_sid + ?, v.choice, v.blind, "
        "v.better_text, v.created_at, NULL "
        "FROM stage.votes AS v JOIN stage.conversations AS c ON c.sid = v.conversation_sid",
        [offset, offset])
    return lines


def write_votes(store: Store, votes: list[tuple[int, dict]]) -> int:
    """Add ``(line, vote)`` pairs the store does not hold yet (by vote uid), all or none;
    returns the file lines they came from (two for a 'better' vote, else one).
    ConflictError if one disagrees with the store."""
    store.db.execute("ATTACH DATABASE ':memory:' AS stage")
    try:
        store.db.conn.executescript(_STAGE_SCHEMA)
        _stage(store, votes)
        with store.transaction():
            return _copy(store)
    finally:
        store.db.execute("DETACH DATABASE stage")
