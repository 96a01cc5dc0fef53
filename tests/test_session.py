"""The chat session without Qt: the bundled model, a real SQLite file, real threads."""

import json
import sqlite3
import threading

import pytest

from diptych import paths
from diptych.models.engine import SamplingParams
from diptych.models.session import Changes, Contender, Session, SessionError, StoreWriteError
from diptych.training.store import Store


def register_lora(data_dir, name, base, seed=0):
    """A registered adapter: a small random GGUF LoRA in ``adapters/<name>/``."""
    from helpers import write_random_lora

    folder = paths.adapters_dir(data_dir) / name
    folder.mkdir(parents=True)
    write_random_lora(folder / "adapter.gguf", base, seed=seed)
    (folder / "meta.json").write_text(json.dumps({"name": name, "kind": "dpo"}))
    return folder / "adapter.gguf"


@pytest.fixture
def session(bundled_model, data_dir):
    s = Session(Store.open(data_dir), n_ctx=512)
    s.settings.params = SamplingParams(max_tokens=6, seed=1)
    s.load(bundled_model)
    yield s
    s.close()
    s.store.close()


def answer_both(session):
    """Both sides at once, as the window runs them."""
    threads = [threading.Thread(target=session.answer, args=(side,)) for side in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def hold_write_lock(path):
    """Another process's writer: a second connection holding the write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_turn_answered_and_voted(session):
    assert session.add_turn("What is 2 + 2?") == Changes(conversation=True)
    tokens = []
    done = session.answer("left", tokens.append)
    session.answer("right")
    assert "".join(tokens) == done.text == session.conversation.turns[0].answers["left"]
    changes = session.vote("right")
    assert changes.votes and not changes.conversation
    vote = session.store.votes()[-1]
    assert vote["choice"] == "right" and vote["left"]["role"] == vote["right"]["role"] == "base"
    assert vote["left"]["text"] == done.text and session.vote_count == 1
    with pytest.raises(SessionError):  # one vote per turn
        session.vote("left")
    session.undo_vote()
    assert session.store.votes() == [] and session.can_vote


def test_a_vote_the_database_cannot_take_is_kept_and_retried(session, data_dir):
    """Another process holds the write lock through the answers and the vote: nothing is
    written, nothing is lost, and the retry writes it all once."""
    session.store.db.execute("PRAGMA busy_timeout = 200")
    other = hold_write_lock(paths.db_path(data_dir))
    session.add_turn("Name a colour.")
    answer_both(session)  # the answers cannot be written either: they stay pending
    with pytest.raises(StoreWriteError, match="locked"):
        session.vote("left")
    assert session.pending_vote == ("left", None) and session.vote_id is None
    other.rollback()
    other.close()
    assert session.retry_vote().votes
    votes = session.store.votes()
    assert len(votes) == 1 and votes[0]["choice"] == "left" and session.pending_vote is None
    assert votes[0]["left"]["text"] == session.conversation.turns[0].answers["left"]


def test_an_adapter_switch_waits_for_the_answer_on_that_engine(session, data_dir, bundled_model):
    """No "busy": the switch is queued behind the stream and runs after it."""
    lora = register_lora(data_dir, "v1", bundled_model)
    session.settings.params = SamplingParams(max_tokens=40, seed=1)
    session.add_turn("Tell me about the sea.")
    started = threading.Event()
    streaming = threading.Thread(target=session.answer, args=("right", lambda _t: started.set()))
    streaming.start()
    started.wait(30)
    session.set_contender("right", Contender.of(lora))  # blocks until the stream is done
    assert session.answers["right"].completion is not None  # it ran after the stream ended
    streaming.join()
    assert session.answers["right"].contender.adapter is None  # answered by the base
    assert session.answers["right"].completion.finish_reason != "cancelled"
    assert session.engine("right").adapter_path == lora
    assert session.contender("right").identity == "v1"


def test_two_adapters_compete_and_scoring_puts_them_back(session, data_dir, bundled_model):
    v1 = register_lora(data_dir, "v1", bundled_model, seed=1)
    v2 = register_lora(data_dir, "v2", bundled_model, seed=2)
    session.set_contender("left", Contender.of(v1))
    session.set_contender("right", Contender.of(v2))
    session.add_turn("Say hello.")
    answer_both(session)
    comparison = session.score("left")  # v1 against the base: the right slot drops v2 meanwhile
    assert any(t.log_ratio != 0 for t in comparison.tokens)
    assert "v1" in comparison.tuned_label and "no adapter" in comparison.base_label
    assert session.engines["right"].adapter_path == v2  # put back
    session.vote("left")
    vote = session.store.votes()[-1]
    assert (vote["left"]["adapter"], vote["right"]["adapter"]) == ("v1", "v2")
    assert vote["left"]["role"] == vote["right"]["role"] == "tuned"


def test_a_scoring_is_queued_on_both_engines_and_holds_no_thread(session, data_dir, bundled_model):
    """Issue 20: ``score_later`` and ``load_later`` return at once (no thread waits for the
    queues); the scoring runs after the stream queued before it, and the work queued
    after it on either engine runs after it, in the order asked."""
    lora = register_lora(data_dir, "v1", bundled_model)
    session.set_contender("right", Contender.of(lora))
    session.add_turn("Say hello.")
    answer_both(session)
    session.settings.params = SamplingParams(max_tokens=40, seed=1)
    session.add_turn("Tell me about the sea.")
    session.answer("left")
    order = []
    started = threading.Event()
    stream = session.answer_later("right", lambda _t: started.set())
    stream.add_done_callback(lambda _f: order.append("stream"))
    assert started.wait(30)
    score = session.score_later("left")  # returns while the right engine still streams
    assert not score.done()
    score.add_done_callback(lambda _f: order.append("score"))
    after = [session.queues[slot].submit(order.append, slot) for slot in ("left", "right")]
    comparison = score.result(60)
    for f in after:
        f.result(60)
    stream.result(60)
    assert order.index("score") < order.index("left") and order.index("score") < order.index("right")
    assert any(t.log_ratio != 0 for t in comparison.tokens)
    load = session.load_later(bundled_model)
    assert not load.done() and load.result(60) == Changes(contenders=True)
    assert session.engine("right").adapter_path == lora  # the contender stays on a reload


def test_blind_mode_starts_with_the_next_conversation(session, data_dir, bundled_model):
    session.set_contender("right", Contender.of(register_lora(data_dir, "v1", bundled_model)))
    session.add_turn("Hi.")
    session.set_blind(True)  # mid-conversation: this one keeps its sides and names
    assert session.shown == {"left": "left", "right": "right"} and not session.hidden
    session.new_conversation()
    seen = set()
    for _ in range(12):  # drawn per conversation: both placements occur
        session.new_conversation()
        session.add_turn("Hi.")
        seen.add(session.shown["left"])
        assert session.hidden and session.conversation_blind
    assert seen == {"left", "right"}
    answer_both(session)
    side_of_v1 = next(s for s in ("left", "right") if session.contender(s).identity == "v1")
    assert session.vote(side_of_v1).contenders  # the names show after the vote
    vote = session.store.votes()[-1]
    assert vote["blind"] and vote[side_of_v1]["adapter"] == "v1" and not session.hidden


def test_a_refused_vote_is_written_after_the_user_moves_on(session, data_dir):
    session.store.db.execute("PRAGMA busy_timeout = 200")
    other = hold_write_lock(paths.db_path(data_dir))
    session.add_turn("Name a colour.")
    answer_both(session)
    with pytest.raises(StoreWriteError):
        session.vote("right")
    other.rollback()
    other.close()
    session.new_conversation()  # without Retry: the vote is kept, not dropped
    assert session.pending_vote is None and len(session.unsaved_votes) == 1
    session.add_turn("Name a fruit.")
    answer_both(session)  # the next write writes the earlier vote first
    assert session.unsaved_votes == []
    votes = session.store.votes()
    assert [(v["prompt"], v["choice"]) for v in votes] == [("Name a colour.", "right")]
    session.vote("left")
    assert [v["prompt"] for v in session.store.votes()] == ["Name a colour.", "Name a fruit."]


def test_a_new_conversation_while_a_vote_is_written_keeps_one_vote_on_the_old_one(session):
    """Ctrl+N before "Recorded": the vote is written once, for the conversation it judged,
    and the new conversation has no vote of its own."""
    session.add_turn("Name a colour.")
    answer_both(session)
    hold = threading.Event()
    session.store_queue.submit(hold.wait)  # the store queue is busy: the vote waits its turn
    written = session.vote_later("right")
    session.new_conversation()
    hold.set()
    written.result(timeout=30)
    assert session.vote_id is None and session.unsaved_votes == [] and session.pending_vote is None
    assert [(v["prompt"], v["choice"]) for v in session.store.votes()] == [("Name a colour.", "right")]
    session.add_turn("Name a fruit.")
    answer_both(session)
    assert session.can_vote
    session.vote("left")
    assert [v["prompt"] for v in session.store.votes()] == ["Name a colour.", "Name a fruit."]
