"""The stats tab on a real store: win rates, their plot, ratings, and win rate against KL."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtWidgets import QLabel
from test_store import record_sample_vote

from diptych.desktop.stats_view import WINRATE_COLUMNS, StatsView, kl_from_base
from diptych.training.store import Store
from diptych.training.winrates import wilson


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "diptych.sqlite") as s:
        yield s


def make_view(qtbot, store) -> StatsView:
    view = StatsView(store)
    qtbot.addWidget(view)
    # The bootstrap result arrives through the event loop, so it cannot be missed here.
    with qtbot.waitSignal(view.ratings_updated, timeout=5000):
        pass
    return view


def cell(table, row: int, name: str) -> str:
    return table.item(row, WINRATE_COLUMNS.index(name)).text()


def test_win_rates_plot_and_ratings(qtbot, store):
    # v1 on the right against the base: 3 wins, 1 loss, 2 ties, 1 both bad.
    for minute, choice in enumerate(["right"] * 3 + ["left", "tie", "tie", "both_bad"]):
        record_sample_vote(store, choice, created_at=f"2026-01-01T00:0{minute}:00+00:00")
    record_sample_vote(store, "left", left="v2", right=None, created_at="2026-01-02T00:00:00+00:00")
    view = make_view(qtbot, store)

    table = view.winrate_table
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == ["v1", "v2"]
    assert [cell(table, 0, k) for k in ("Votes", "Wins", "Losses", "Ties", "Both bad")] == \
        ["7", "3", "1", "2", "1"]
    assert cell(table, 0, "Win rate") == "67%"  # (3 + 2/2) / 6
    low, high = wilson(4, 6)
    assert cell(table, 0, "95% interval") == f"{low:.0%} – {high:.0%}"
    assert cell(table, 1, "Win rate") == "100%"
    assert "half a win" in view.findChild(QLabel, "ties-note").text()

    x, y = view.winrate_points.getData()
    assert list(x) == [0, 1] and np.allclose(y, [400 / 6, 100])
    ticks = view.winrate_plot.getAxis("bottom")._tickLevels[0]
    assert [name for _, name in ticks] == ["v1", "v2"]

    ratings = view.ratings_table
    models = sorted(ratings.item(r, 0).text() for r in range(ratings.rowCount()))
    assert models == ["base", "v1", "v2"]
    assert view.kl_plot.isHidden()


def test_refresh_follows_new_votes(qtbot, store):
    view = make_view(qtbot, store)
    assert view.winrate_table.rowCount() == 0 and not view.empty_note.isHidden()
    assert view.ratings_table.isHidden() and "two models" in view.ratings_note.text()
    record_sample_vote(store, "right")
    with qtbot.waitSignal(view.ratings_updated, timeout=5000):
        view.refresh()
    assert view.winrate_table.rowCount() == 1 and view.empty_note.isHidden()
    assert view.ratings_table.rowCount() == 2 and not view.ratings_table.isHidden()


def test_kl_plot_appears_with_kl_values(qtbot, store):
    for adapter in ("v1", "v2", "v3"):
        record_sample_vote(store, "right", right=adapter)
    view = make_view(qtbot, store)
    view.set_adapters([
        SimpleNamespace(name="v1", metrics={"after": {"kl": 0.02}}),
        SimpleNamespace(name="v2", metrics={"kl_from_base": 0.05}),
        SimpleNamespace(name="v3", metrics={}),
    ])
    assert not view.kl_plot.isHidden()
    x, y = view.kl_points.getData()
    assert list(x) == [0.02, 0.05] and list(y) == [100, 100]
    view.set_kl({})
    assert view.kl_plot.isHidden()


def test_kl_from_base_reads_either_key():
    assert kl_from_base({"after": {"kl": 0.1}, "kl_from_base": 0.2}) == 0.1
    assert kl_from_base({"kl_from_base": 0.2}) == 0.2
    assert kl_from_base({"after": {"kl": None}}) is None
