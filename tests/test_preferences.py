"""Preference export and import: TRL's format, exact round trips, whole-file validation."""

from __future__ import annotations

import json

import pytest
from helpers import record_sample_vote

from diptych.training import preferences
from diptych.training.preferences import (ImportFormatError, export_jsonl, import_jsonl,
                                          read_jsonl)
from diptych.training.store import Store


def two_turn_vote(store: Store) -> int:
    """A second-turn vote: each pane continued from its own first answer."""
    cid = store.new_conversation("Answer in one line.", False)
    system = {"role": "system", "content": "Answer in one line."}
    first = {"role": "user", "content": "Name a fruit."}
    store.add_user_message(cid, 0, first["content"])
    store.add_user_message(cid, 1, "Another, \"quoted\" — naïve ☃?")
    ids = []
    for side, adapter, earlier in (("left", None, "Apple?"), ("right", "v2", "Pear.\nYes.")):
        prompt = [system, first, {"role": "assistant", "content": earlier},
                  {"role": "user", "content": "Another, \"quoted\" — naïve ☃?"}]
        ids.append(store.add_response(
            cid, 1, side, "tuned" if adapter else "base", "" if side == "left" else "Plum.",
            model="gemma", model_path=None, model_hash=None, adapter=adapter,
            adapter_path=None, adapter_scale=0.75 if adapter else None, template_name=None,
            template_source=None, params={"top_p": 0.95, "stop": ["\n\n"]},
            prompt_messages=prompt, n_tokens=0 if side == "left" else 2, ttft_s=None,
            tokens_per_s=1 / 3, finish_reason="length"))
    return store.record_vote(*ids, "right", False)


@pytest.fixture
def source(tmp_path):
    with Store(tmp_path / "a.sqlite") as store:
        record_sample_vote(store, "left", system="Be kind.")
        record_sample_vote(store, "right", right="v1")
        record_sample_vote(store, "better", better_text="It is 4.\n\nFour.")
        record_sample_vote(store, "tie")
        record_sample_vote(store, "both_bad", left="v1", right="v2")
        store.delete_vote(record_sample_vote(store, "left"))
        two_turn_vote(store)
        yield store


def lines_of(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_records_are_trl_preference_pairs(source, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert export_jsonl(source, out) == 5  # left, right, better x2, two-turn right
    records = read_jsonl(out)
    assert [r["choice"] for r in records] == ["left", "right", "better", "better", "right"]
    for record in records:
        assert record["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in record["chosen"] + record["rejected"]] == ["assistant"] * 2
    assert records[0]["prompt"][0] == {"role": "system", "content": "Be kind."}
    assert records[0]["chosen_meta"]["side"] == "left" and records[0]["rejected_meta"]["adapter"] == "v1"
    better = records[2:4]
    assert [r["chosen"][0]["content"] for r in better] == ["It is 4.\n\nFour."] * 2
    assert [r["rejected_meta"]["side"] for r in better] == ["left", "right"]
    assert better[0]["vote_uid"] == better[1]["vote_uid"]
    # the loser of a second-turn vote saw its own earlier answer
    last = records[4]
    assert last["prompt"][2]["content"] == "Pear.\nYes."
    assert last["rejected_meta"]["prompt"][2]["content"] == "Apple?"
    assert preferences.records(source) == records
    assert [r["choice"] for r in preferences.records(source, adapter="v2")] == ["right"]


def test_ties_only_with_the_flag(source, tmp_path):
    out = tmp_path / "all.jsonl"
    assert export_jsonl(source, out, include_ties=True) == 7
    ties = [r for r in read_jsonl(out) if "responses" in r]
    assert [r["choice"] for r in ties] == ["tie", "both_bad"]
    assert all("chosen" not in r and len(r["responses"]) == 2 for r in ties)
    assert [m["side"] for m in ties[1]["responses_meta"]] == ["left", "right"]


@pytest.mark.parametrize("include_ties", [False, True])
def test_export_import_export_is_byte_identical(source, tmp_path, include_ties):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    count = export_jsonl(source, first, include_ties=include_ties)
    with Store(tmp_path / "b.sqlite") as target:
        assert import_jsonl(target, first) == count
        export_jsonl(target, second, include_ties=include_ties)
        assert second.read_bytes() == first.read_bytes()
        # importing the same file again adds nothing
        assert import_jsonl(target, first) == 0
        assert target.pair_counts() == {**source.pair_counts(),
                                        **({} if include_ties else {"tie": 0, "both_bad": 0,
                                                                   "votes": 4})}


def _drop(key):
    def change(record):
        del record[key]
    return change


def _set(path, value):
    def change(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize("line, change, problem", [
    (3, None, "not valid JSON"),
    (2, _drop("chosen"), "missing key 'chosen'"),
    (1, _drop("vote_uid"), "missing key 'vote_uid'"),
    (4, _set(["chosen", 0, "role"], "user"), "exactly one assistant message"),
    (1, _set(["prompt", 0, "role"], "robot"), "role 'robot'"),
    (2, _set(["prompt", 0, "content"], " "), "empty content"),
    (3, _set(["chosen", 0, "content"], ""), "cannot be empty"),
    (1, _set(["choice"], "meh"), "'choice' is 'meh'"),
    (1, _set(["blind"], 1), "'blind' must be true or false"),
    (2, _set(["turn"], 3), "'turn' 3 needs 4"),
    (5, _set(["rejected_meta", "side"], "right"), "'rejected_meta.side' is 'right'"),
    (1, _set(["chosen_meta", "n_tokens"], "five"), "'chosen_meta.n_tokens' must be an integer"),
    (2, _set(["created_at"], "yesterday"), "not an ISO 8601 time"),
    (3, _set(["vote_uid"], "lonely"), "has 1 lines; a 'better' vote has 2"),
    (4, _set(["chosen", 0, "content"], "Five."), "disagree on 'chosen'"),
])
def test_malformed_file_is_rejected_whole(source, tmp_path, line, change, problem):
    good = tmp_path / "good.jsonl"
    export_jsonl(source, good)
    lines = lines_of(good)
    if change is None:
        lines[line - 1] = '{"prompt": [\n'
    else:
        record = json.loads(lines[line - 1])
        change(record)
        lines[line - 1] = json.dumps(record) + "\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines), encoding="utf-8")
    with Store(tmp_path / "b.sqlite") as target:
        with pytest.raises(ImportFormatError, match=problem) as caught:
            import_jsonl(target, bad)
        assert caught.value.line == line and str(caught.value).startswith(f"line {line}: ")
        assert target.pair_counts()["votes"] == 0 and target.conversations() == []


def test_a_conflict_with_the_store_rolls_back_every_line(source, tmp_path):
    good = tmp_path / "good.jsonl"
    export_jsonl(source, good)
    first, second = (json.loads(line) for line in lines_of(good)[:2])
    second["conversation_uid"] = first["conversation_uid"]  # same conversation ...
    second["prompt"] = first["prompt"][:-1] + [{"role": "user", "content": "Something else"}]
    second["chosen_meta"]["prompt"] = second["rejected_meta"]["prompt"] = None
    with Store(tmp_path / "b.sqlite") as target:
        import_jsonl(target, good)  # ... whose first message the store already holds
        before = target.pair_counts()
        second["vote_uid"] = "new-vote"
        edited = tmp_path / "edited.jsonl"
        edited.write_text(json.dumps(second) + "\n", encoding="utf-8")
        with pytest.raises(ImportFormatError, match="line 1: .*different user message"):
            import_jsonl(target, edited)
        assert target.pair_counts() == before


def test_bare_trl_pairs_import_once(tmp_path):
    from diptych.training.preferences import import_jsonl
    from diptych.training.store import Store

    path = tmp_path / "plain.jsonl"
    path.write_text(
        '{"prompt": [{"role": "user", "content": "Hi"}], '
        '"chosen": [{"role": "assistant", "content": "Hello!"}], '
        '"rejected": [{"role": "assistant", "content": "Hi? Hi?"}]}\n'
    )
    store = Store(tmp_path / "db.sqlite")
    assert import_jsonl(store, path) == 1
    assert import_jsonl(store, path) == 0
    pairs = preferences.records(store)
    assert len(pairs) == 1
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Hello!"}]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Hi"}]
