"""Win rates against the base and Bradley-Terry ratings."""

from __future__ import annotations

import json
import math

import pytest
from helpers import record_sample_vote

from diptych.training.store import Store
from diptych.training.winrates import adapter_winrates, parent_winrates, ratings, summary, wilson


def vote(choice: str, left: str | None = None, right: str | None = "v1", day: int = 1) -> dict:
    """A row shaped like Store.votes(), with only what the statistics read."""
    return {"choice": choice, "created_at": f"2026-01-{day:02d}T00:00:00+00:00",
            "left": {"adapter": left}, "right": {"adapter": right}}


def test_wilson_interval():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 5)
    assert low == 0.0 and 0.4 < high < 0.45


def test_adapter_winrates_count_ties_as_half():
    votes = [
        vote("right", day=3), vote("right", day=4), vote("left", left="v1", right=None, day=5),
        vote("left", day=5), vote("tie", day=6), vote("tie", left="v1", right=None, day=6),
        vote("both_bad", day=7), vote("better", day=8),
        vote("left", left="v1", right="v2", day=9),  # not against the base
        vote("left", left=None, right=None, day=9),  # base against base
        vote("left", left="v2", right=None, day=2),
    ]
    v2, v1 = adapter_winrates(votes)  # v2 met the user first
    assert (v2.adapter, v2.wins, v2.win_rate) == ("v2", 1, 1.0)
    assert (v1.wins, v1.losses, v1.ties, v1.both_bad, v1.better) == (3, 1, 2, 1, 1)
    assert v1.win_rate == pytest.approx(4 / 6)
    assert (v1.low, v1.high) == pytest.approx(wilson(4, 6))
    assert v1.first_vote_at.startswith("2026-01-03") and v1.last_vote_at.startswith("2026-01-08")


def test_ratings_match_the_closed_form_for_two_models():
    votes = [vote("right")] * 30 + [vote("left")] * 10
    base, v1 = sorted(ratings(votes, resamples=50), key=lambda r: r.model)
    assert base.rating == 0.0 and base.games == 40
    # one virtual tie (half a win each) is added to every pair that met
    assert v1.rating == pytest.approx(400 * math.log10(30.5 / 10.5), abs=1e-6)
    assert v1.low < v1.rating < v1.high


def test_ratings_order_three_models_and_are_seeded():
    votes = ([vote("right")] * 20 + [vote("left")] * 10
             + [vote("right", left="v1", right="v2")] * 20 + [vote("left", left="v1", right="v2")] * 5
             + [vote("tie", right="v2")] * 4 + [vote("both_bad", right="v2")] * 9)
    result = ratings(votes)
    assert [r.model for r in result] == ["v2", "v1", "base"]
    assert all(r.low <= r.rating <= r.high for r in result)
    assert ratings(votes) == result


def test_ratings_stay_finite_without_a_single_win():
    (base, v1) = ratings([vote("left")] * 5)
    assert base.model == "base" and math.isfinite(v1.rating) and v1.rating < 0
    assert ratings([]) == [] and ratings([vote("both_bad")]) == []


def test_summary_is_json_ready(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        record_sample_vote(store, "right")
        record_sample_vote(store, "tie")
        report = json.loads(json.dumps(summary(store, resamples=20)))
    assert report["counts"]["votes"] == 2
    assert report["adapters"][0]["adapter"] == "v1" and report["adapters"][0]["win_rate"] == 0.75
    assert report["versus_parent"] == []
    assert {r["model"] for r in report["ratings"]} == {"base", "v1"}


def test_each_version_against_its_parent():
    parents = {"v2": "v1", "v3": "v2"}
    votes = ([vote("left", left="v2", right="v1")] * 3 + [vote("right", left="v2", right="v1")]
             + [vote("tie", left="v1", right="v2"), vote("both_bad", left="v1", right="v2")]
             + [vote("left", left="v3", right="v1")] * 5  # v3 against its grandparent: not counted
             + [vote("right", left="v2", right="v3", day=2)] * 2
             + [vote("right", right="v2")] * 4)  # against the base: the other table
    v2, v3 = parent_winrates(votes, parents)
    assert (v2.adapter, v2.wins, v2.losses, v2.ties, v2.both_bad) == ("v2", 3, 1, 1, 1)
    assert v2.win_rate == pytest.approx(3.5 / 5) and (v2.low, v2.high) == pytest.approx(wilson(3.5, 5))
    assert (v3.adapter, v3.wins, v3.losses) == ("v3", 2, 0)
    assert parent_winrates(votes, {}) == []
    assert [w.adapter for w in adapter_winrates(votes)] == ["v2"]


def test_parents_follow_renames_and_chains_stop_at_a_loop():
    from types import SimpleNamespace

    from diptych.training.lineage import chain, parents

    def info(name, parent=None, former=()):
        meta = {"former_names": list(former)}
        if parent is not None:
            meta["parent"] = parent
        return SimpleNamespace(name=name, meta=meta)

    infos = [info("v1-renamed", former=["v1"]), info("v2", {"name": "v1"}),
             info("v3", {"name": "v2"}), info("orphan", {"name": "deleted-one"}),
             info("odd", "not an object"), info("odder", {"name": 7})]
    found = parents(infos)
    assert found == {"v2": "v1-renamed", "v3": "v2", "orphan": "deleted-one"}
    assert chain("v3", found) == ["v1-renamed", "v2", "v3"]
    assert chain("a", {"a": "b", "b": "a"}) == ["b", "a"]
