"""The stats tab on a real store: win rates, their plot, ratings, and win rate against KL."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtWidgets import QLabel
from helpers import record_sample_vote

from diptych.desktop.stats_view import DRIFT_COLUMNS, WINRATE_COLUMNS, StatsView
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


def fake_adapter(name, drift=None, kind="dpo"):
    return SimpleNamespace(name=name, kind=kind, gguf_path=f"{name}.gguf", meta={"drift": drift or {}})


def test_drift_table_and_the_kl_plot(qtbot, store):
    for adapter in ("v1", "v2", "v3"):
        record_sample_vote(store, "right", right=adapter)
    view = make_view(qtbot, store)
    view.set_adapters([
        fake_adapter("v1", {"held_out": {"kl": 0.02, "measured_at": "2026-11-20T10:00:00+00:00"},
                            "recent": {"kl": 0.03, "measured_at": "2026-11-21T09:30:00+00:00"}}),
        fake_adapter("v2", {"held_out": {"kl": 0.05}}),
        fake_adapter("v3"),
        SimpleNamespace(name="judge", kind="reward", gguf_path=None, meta={}),  # does not generate
    ])
    table = view.drift_table
    rows = [[table.item(r, c).text() for c in range(len(DRIFT_COLUMNS))] for r in range(table.rowCount())]
    assert rows == [["v1", "dpo", "0.0200", "0.0300", "2026-11-21 09:30"],
                    ["v2", "dpo", "0.0500", "—", "not yet"],
                    ["v3", "dpo", "—", "—", "not yet"]]
    assert not view.kl_plot.isHidden()
    x, y = view.kl_points.getData()
    assert list(x) == [0.02, 0.05] and list(y) == [100, 100]  # held-out KL; v3 not measured
    assert not view.measure_button.isEnabled()  # nothing selected
    table.selectRow(2)
    assert view.measure_button.isEnabled()
    view.set_kl({})
    assert view.kl_plot.isHidden()


def test_measure_an_adapter_from_the_view(qtbot, store, data_dir, bundled_model, monkeypatch):
    from helpers import register_adapter, write_random_lora

    from diptych.models import adapters, drift

    prompts = drift.held_out_prompts()[:2]
    monkeypatch.setattr(drift, "held_out_prompts", lambda: prompts)  # a short set: the wiring
    record_sample_vote(store, "right", right="drifty")
    info = register_adapter(data_dir, write_random_lora(data_dir / "random.gguf", bundled_model))
    view = StatsView(store, model_path=lambda: bundled_model)
    qtbot.addWidget(view)
    view.set_adapters([info])
    assert view.drift_table.item(0, 2).text() == "—"
    view.drift_table.selectRow(0)
    progress = []
    view.drift_progress.connect(lambda *args: progress.append(args))
    with qtbot.waitSignal(view.drift_recorded, timeout=120_000):
        view.measure_button.click()
        assert not view.measure_button.isEnabled() and "Measuring drifty" in view.drift_status.text()
    stored = adapters.resolve("drifty", data_dir).meta["drift"]
    assert set(stored) == {"held_out", "recent"}  # the store's one prompt is a recent prompt
    assert stored["held_out"]["kl"] > 0 and stored["recent"]["prompts"] == 1
    assert progress[-1] == ("recent", 1, 1) and ("held_out", 2, 2) in progress
    assert view.drift_table.item(0, 2).text() == f"{stored['held_out']['kl']:.4f}"
    assert "KL from the base per token" in view.drift_status.text()
    assert view.measure_button.isEnabled()
    x, _ = view.kl_points.getData()
    assert list(x) == [stored["held_out"]["kl"]]


def test_few_games_get_no_point_interval_and_a_listed_adapter_is_not_missing(qtbot, store):
    record_sample_vote(store, "right", right="v1")
    record_sample_vote(store, "right", right="v1")
    view = make_view(qtbot, store)
    table = view.ratings_table
    rows = {table.item(r, 0).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert rows["v1"] == "needs 5+ games"  # two games resample to one point
    view.set_adapters([])  # before the first job
    assert "No adapter" in view.drift_status.text()
    view.set_adapters([fake_adapter("v1")])
    assert "No adapter" not in view.drift_status.text()


def test_a_renamed_adapter_keeps_its_votes(qtbot, store):
    record_sample_vote(store, "right", right="v1")
    view = make_view(qtbot, store)
    renamed = fake_adapter("v1-final")
    renamed.meta["former_names"] = ["v1"]
    with qtbot.waitSignal(view.ratings_updated, timeout=5000):
        view.set_adapters([renamed])
    assert [(w.adapter, w.wins) for w in view.winrates] == [("v1-final", 1)]


def test_versions_show_their_lineage_and_win_rate_against_the_parent(qtbot, store):
    from diptych.desktop.stats_view import VERSION_COLUMNS

    for choice in ("left", "left", "left", "right", "tie"):  # v2 (left) against its parent v1
        record_sample_vote(store, choice, left="v2", right="v1")
    record_sample_vote(store, "right", right="v2")  # v2 against the base
    view = make_view(qtbot, store)
    assert view.versions_box.isHidden()  # no adapter continues another yet
    v1 = fake_adapter("v1")
    v1.meta["former_names"] = ["first"]
    v2 = fake_adapter("v2")
    v2.meta["parent"] = {"name": "first", "created_at": "2026-11-01T00:00:00+00:00"}  # renamed since
    v3 = fake_adapter("v3")
    v3.meta["parent"] = {"name": "v2"}
    with qtbot.waitSignal(view.ratings_updated, timeout=5000):
        view.set_adapters([v3, v2, v1])
    table = view.versions_table
    rows = [[table.item(r, c).text() for c in range(len(VERSION_COLUMNS))] for r in range(table.rowCount())]
    low, high = wilson(3.5, 5)
    assert rows == [["v2", "v1 → v2", "100% (21% – 100%)", f"70% ({low:.0%} – {high:.0%})", "5"],
                    ["v3", "v1 → v2 → v3", "no votes yet", "no votes yet", "0"]]
    assert not view.versions_box.isHidden()
