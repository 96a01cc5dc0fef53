"""One house: each view redraws for the Changes it shows and for no others, and no store
read runs on the UI thread while the Data, Stats and Train tabs refresh."""

from __future__ import annotations

import json
import threading
from dataclasses import fields

import pytest
from PySide6.QtCore import QObject

from diptych.desktop import ops
from diptych.desktop.main_window import MainWindow
from diptych.models.session import Changes
from diptych.training.store import Store

from every_vote import fill

# What redraws for each flag: the views that re-read (a query they start), and the chat
# tab's own redraws.
REDRAWN = {
    "votes": {"data", "stats", "job_form"},
    "adapters": {"stats", "adapter_list", "pickers"},
    "contenders": {"pickers"},
    "blind": {"headers"},
    "conversation": {"turns"},
    "queue": {"queue"},
}
STORE_READS = ("votes", "vote_by_id", "conversation", "conversations", "pair_counts",
               "recent_prompts", "mean_answer_tokens", "left_out")


def test_every_flag_has_its_views():
    assert set(REDRAWN) == {f.name for f in fields(Changes)}


@pytest.fixture
def window(qtbot, data_dir, monkeypatch):
    """A window on a store with votes (no model: nothing here needs one), whose redraws
    are recorded in ``window.redrawn``."""
    with Store.open(data_dir) as store:
        fill(store)
    folder = data_dir / "adapters" / "dpo-one"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"kind": "dpo"}), encoding="utf-8")
    redrawn: list[str] = []
    for method, name in (("_update_headers", "headers"), ("_show_turns", "turns")):
        real = getattr(MainWindow, method)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            redrawn.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MainWindow, method, spy)
    win = MainWindow(data_dir)
    qtbot.addWidget(win)
    names = {win.data_view: "data", win.stats_view: "stats", win.training.job_form: "job_form",
             win.training.adapters: "adapter_list", win: "pickers", win.queue_view: "queue"}
    real_query = ops.run_query

    def query(parent, *args, **kwargs):
        if parent in names:
            redrawn.append(names[parent])
        return real_query(parent, *args, **kwargs)

    monkeypatch.setattr(ops, "run_query", query)
    ops.wait_for_queries()
    win.redrawn = redrawn
    yield win
    ops.wait_for_queries()


@pytest.mark.parametrize("flag", sorted(REDRAWN))
def test_a_view_redraws_for_its_flags_only(qtbot, window, flag):
    initiator = QObject()
    window.redrawn.clear()
    ops.run_op(initiator, lambda: Changes(**{flag: True}))
    ops.wait_for_queries()
    assert set(window.redrawn) == REDRAWN[flag]
    window.redrawn.clear()
    ops.run_op(initiator, Changes)  # nothing changed: nothing is announced or redrawn
    ops.wait_for_queries()
    assert window.redrawn == []


def test_the_initiator_of_a_vote_change_is_not_redrawn_twice(qtbot, window):
    """The Data tab redraws itself after its own delete; the hub's call leaves it be."""
    window.redrawn.clear()
    ops.run_op(window.data_view, lambda: Changes(votes=True))
    ops.wait_for_queries()
    assert "data" not in window.redrawn and {"stats", "job_form"} <= set(window.redrawn)


def test_no_store_read_runs_on_the_ui_thread(qtbot, data_dir, monkeypatch):
    with Store.open(data_dir) as store:
        fill(store)
    reads, on_ui_thread = [], []
    for name in STORE_READS:
        real = getattr(Store, name)

        def guarded(self, *args, _real=real, _name=name, **kwargs):
            reads.append(_name)
            if threading.current_thread() is threading.main_thread():
                on_ui_thread.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Store, name, guarded)
    win = MainWindow(data_dir)
    qtbot.addWidget(win)
    ops.wait_for_queries()
    form = win.training.job_form
    for kind in ("dpo", "kto", "sft", "grpo"):  # each kind's data sources and counts
        form.kind.setCurrentIndex(form.kind.findData(kind))
        ops.wait_for_queries()
    form.source.setCurrentIndex(form.source.findData("history"))
    form.refresh_counts()
    win.data_view.refresh()
    win.data_view.table.selectRow(0)
    win.data_view.open_conversation()
    ops.run_op(QObject(), lambda: Changes(votes=True, adapters=True))
    ops.wait_for_queries()
    assert {"votes", "pair_counts", "recent_prompts", "vote_by_id", "conversation"} <= set(reads)
    assert on_ui_thread == []
    assert "8 usable pairs" in win.training.job_form.vote_counts.text() or \
        win.training.job_form.vote_counts.text().startswith("Your votes give")
    assert win.data_view.table.rowCount() >= 1
