"""The votes tab on a real store: filters, delete and undo, the conversation, export and import."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PySide6.QtCore import Qt
from helpers import record_sample_vote

from diptych.desktop import data_view, ops
from diptych.desktop.data_view import DataView
from diptych.training.store import Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "diptych.sqlite") as s:
        record_sample_vote(s, "left", prompt="Name a colour")
        record_sample_vote(s, "tie", right="v2", prompt="Say hello")
        record_sample_vote(s, "right", prompt="What is 2+2?")
        record_sample_vote(s, "better", left="v1", right="v2", prompt="Write a poem",
                           better_text="Roses are red")
        yield s


@pytest.fixture
def view(qtbot, store):
    widget = DataView(store)
    qtbot.addWidget(widget)
    ops.wait_for_queries()
    return widget


def pick(combo, data) -> None:
    combo.setCurrentIndex(combo.findData(data))
    ops.wait_for_queries()  # the view re-reads the store off the UI thread


def column(view, name: str) -> list[str]:
    c = data_view.COLUMNS.index(name)
    return [view.table.item(r, c).text() for r in range(view.table.rowCount())]


def select_prompt(view, prompt: str) -> int:
    """Select the row showing ``prompt``; returns its vote id."""
    row = column(view, "Prompt").index(prompt)
    view.table.selectRow(row)
    return view.table.item(row, 0).data(Qt.ItemDataRole.UserRole)


def fake_dialogs(monkeypatch, path) -> list[tuple]:
    """Answer the file dialogs with ``path``; collect the warnings shown instead of showing them."""
    warnings = []
    monkeypatch.setattr(data_view, "QFileDialog", SimpleNamespace(
        getSaveFileName=lambda *a, **k: (str(path), ""),
        getOpenFileName=lambda *a, **k: (str(path), "")))
    monkeypatch.setattr(data_view.QMessageBox, "warning",
                        lambda parent, title, text: warnings.append((title, text)))
    return warnings


def test_shows_every_vote_with_counts(view):
    assert view.table.rowCount() == 4
    assert column(view, "Prompt")[0] == "Write a poem"  # newest first
    assert set(column(view, "Choice")) == {"left (base)", "tie", "right (v1)", "your answer"}
    assert column(view, "Your answer").count("yes") == 1
    adapters = [view.adapter_filter.itemData(i) for i in range(view.adapter_filter.count())]
    assert adapters == ["", "base", "v1", "v2"]
    assert "4 of 4 votes" in view.counts.text() and "4 preference pairs" in view.counts.text()


def test_filters_by_kind_adapter_and_text(qtbot, view):
    pick(view.kind_filter, "tie")
    assert column(view, "Prompt") == ["Say hello"]
    pick(view.kind_filter, "")
    pick(view.adapter_filter, "v2")
    assert sorted(column(view, "Prompt")) == ["Say hello", "Write a poem"]
    pick(view.adapter_filter, "")
    view.search.setText("colour")  # debounced: the table follows a moment later
    qtbot.waitUntil(lambda: view.table.rowCount() == 1, timeout=2000)
    assert column(view, "Prompt") == ["Name a colour"]
    assert "1 of 4 votes" in view.counts.text()
    view.search.setText("roses")  # searches the user's own answers too
    qtbot.waitUntil(lambda: column(view, "Prompt") == ["Write a poem"], timeout=2000)


def test_refresh_picks_up_new_votes_and_adapters(view, store):
    pick(view.kind_filter, "left")
    record_sample_vote(store, "left", right="v3", prompt="Another")
    view.refresh()
    ops.wait_for_queries()
    assert sorted(column(view, "Prompt")) == ["Another", "Name a colour"]
    assert view.adapter_filter.findData("v3") >= 0


def test_delete_and_undo(qtbot, view, store):
    vote_id = select_prompt(view, "Say hello")
    with qtbot.waitSignal(ops.hub().changed):
        qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    ops.wait_for_queries()
    assert "Say hello" not in column(view, "Prompt")
    assert store.vote_by_id(vote_id)["deleted_at"] is not None
    assert not view.message_bar.isHidden() and not view.undo_button.isHidden()
    assert "tie 0" in view.counts.text()

    with qtbot.waitSignal(ops.hub().changed):
        qtbot.mouseClick(view.undo_button, Qt.MouseButton.LeftButton)
    ops.wait_for_queries()
    assert store.vote_by_id(vote_id)["deleted_at"] is None
    assert view.selected_ids() == [vote_id]  # the restored vote comes back selected
    assert view.message_bar.isHidden()


def test_open_conversation_shows_both_answers_and_the_vote(qtbot, view):
    assert not view.open_button.isEnabled()
    select_prompt(view, "Write a poem")
    qtbot.mouseClick(view.open_button, Qt.MouseButton.LeftButton)
    ops.wait_for_queries()
    dialog = view.findChild(data_view.QDialog, "conversation-dialog")
    assert dialog.isVisible()
    text = view.conversation_browser.toPlainText()
    for expected in ("Write a poem", "v1 says 4", "v2 says 4", "your answer", "Roses are red"):
        assert expected in text


@pytest.mark.parametrize("include_ties, lines", [(False, 4), (True, 5)])
def test_export_writes_preference_lines(view, monkeypatch, tmp_path, include_ties, lines):
    out = tmp_path / "pairs.jsonl"
    fake_dialogs(monkeypatch, out)
    view.include_ties.setChecked(include_ties)
    view.export_button.click()
    ops.wait_for_queries()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == lines  # left, right, better twice (+ the tie)
    assert {r["choice"] for r in records} >= {"left", "right", "better"}
    assert str(out) in view.message.text()


def test_import_adds_votes(qtbot, view, store, monkeypatch, tmp_path):
    source = tmp_path / "other.sqlite"
    with Store(source) as other:
        record_sample_vote(other, "right", right="v9", prompt="From elsewhere")
        data_view.export_jsonl(other, tmp_path / "in.jsonl")
    warnings = fake_dialogs(monkeypatch, tmp_path / "in.jsonl")
    with qtbot.waitSignal(ops.hub().changed):
        view.import_button.click()
    ops.wait_for_queries()
    assert warnings == []
    assert "From elsewhere" in column(view, "Prompt") and len(store.votes()) == 5
    assert "Imported 1 line" in view.message.text()


def test_import_of_a_malformed_file_shows_the_line_and_imports_nothing(qtbot, view, store,
                                                                        monkeypatch, tmp_path):
    good = tmp_path / "good.jsonl"
    data_view.export_jsonl(store, good)
    bad = tmp_path / "bad.jsonl"
    first = json.loads(good.read_text().splitlines()[0])
    first["vote_uid"] = "new-vote"  # a vote the store lacks: it would be imported
    bad.write_text(json.dumps(first) + "\n" + '{"prompt": "not a list"}\n')
    warnings = fake_dialogs(monkeypatch, bad)
    view.import_button.click()
    qtbot.waitUntil(lambda: bool(warnings), timeout=5_000)  # checked off the UI thread
    assert len(warnings) == 1
    title, text = warnings[0]
    assert title == "Import failed" and "line 2" in text and "Nothing was imported" in text
    ops.wait_for_queries()
    assert len(store.votes()) == 4 and view.table.rowCount() == 4


def test_a_delete_the_database_cannot_take_is_told_and_changes_nothing(qtbot, view, store,
                                                                       monkeypatch, tmp_path):
    import sqlite3

    warnings = fake_dialogs(monkeypatch, tmp_path / "unused.jsonl")
    store.db.execute("PRAGMA busy_timeout = 200")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    vote_id = select_prompt(view, "Say hello")
    view.delete_button.click()  # runs off the UI thread: the click returns at once
    assert "Say hello" in column(view, "Prompt")
    qtbot.waitUntil(lambda: bool(warnings), timeout=5_000)
    other.rollback()
    other.close()
    title, text = warnings[0]
    assert title == "The votes were not deleted" and "locked" in text
    assert store.vote_by_id(vote_id)["deleted_at"] is None and "Say hello" in column(view, "Prompt")


def test_the_time_arrow_points_down_over_newest_first_rows(qtbot, view):
    """Issue 22, item 9: newest first is descending, and must not wear ▲."""
    def arrow_rows():  # the widths of the arrow's dark rows, top to bottom
        header = view.table.horizontalHeader()
        image = header.grab().toImage()
        right = header.sectionViewportPosition(0) + header.sectionSize(0)
        widths = [sum(1 for x in range(right - 24, right)
                      if image.pixelColor(x, y).lightness() < 128) for y in range(image.height())]
        return [w for w in widths if w]

    view.resize(700, 200)
    view.show()
    qtbot.waitExposed(view)
    times = column(view, "Time")
    assert times == sorted(times, reverse=True)  # newest first
    rows = arrow_rows()
    assert rows and rows[0] > rows[-1]  # ▼: wide at the top
    view.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
    ops.wait_for_queries()
    assert column(view, "Time") == sorted(times)
    rows = arrow_rows()
    assert rows and rows[0] < rows[-1]  # ▲ over oldest first
