"""The window's operations: off the UI thread, failures told, one announcement of what changed."""

import sqlite3
from functools import partial

import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtWidgets import QMessageBox, QWidget

from diptych import paths
from diptych.desktop import ops
from diptych.models.errors import UserError
from diptych.models.session import Changes
from helpers import open_window, register_lora, send, wait_idle


@pytest.fixture
def window(qtbot, data_dir, bundled_model):
    register_lora(data_dir, "v1", bundled_model)
    return open_window(qtbot, data_dir, max_tokens=8)


class Ticks:
    """The longest gap between 10 ms timer ticks on the UI thread: a stall shows here."""

    def __init__(self):
        self.clock, self.longest = QElapsedTimer(), 0
        self.timer = QTimer(interval=10, timeout=self._tick)

    def _tick(self):
        if self.clock.isValid():
            self.longest = max(self.longest, self.clock.restart())
        else:
            self.clock.start()

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()


def test_run_op_tells_a_user_error_in_one_line_and_announces_what_changed(qtbot):
    parent = QWidget()
    qtbot.addWidget(parent)
    seen = []
    ops.hub().changed.connect(lambda changes, initiator: seen.append(changes))

    def fails():
        raise UserError("the disk is full")

    ops.run_op(parent, fails)
    qtbot.waitUntil(lambda: parent.findChild(QMessageBox, "error-dialog") is not None)
    assert parent.findChild(QMessageBox, "error-dialog").text() == "the disk is full"
    results = []
    ops.run_op(parent, lambda: Changes(votes=True), success=results.append)
    qtbot.waitUntil(lambda: bool(results))
    assert seen == [Changes(votes=True)]  # once, and only for what changed



def test_a_vote_while_another_process_holds_the_write_lock(qtbot, window, data_dir):
    """Not "Recorded" until committed; the window keeps running; the bar says it was not
    recorded and offers Retry; the retry records it once."""
    send(qtbot, window, "Name a colour.")
    wait_idle(qtbot, window)
    window.controller.session.store.db.execute("PRAGMA busy_timeout = 1000")
    other = sqlite3.connect(paths.db_path(data_dir), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    bar = window.vote_bar
    with Ticks() as ticks, qtbot.waitSignal(window.controller.vote_failed, timeout=5_000):
        bar.buttons["left"].click()
        assert "Saving" in bar.recorded.text() and "Recorded" not in bar.recorded.text()
    assert ticks.longest < 200  # the UI thread never waited for the lock
    assert "Not recorded" in bar.recorded.text() and "locked" in bar.recorded.text()
    assert bar.retry_button.isVisible() and not bar.undo_button.isVisible()
    assert window.store.votes() == []
    other.rollback()
    other.close()
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=5_000):
        bar.retry_button.click()
    assert "Recorded" in bar.recorded.text() and not bar.retry_button.isVisible()
    votes = window.store.votes()
    assert len(votes) == 1 and votes[0]["choice"] == "left"


def test_quitting_with_a_refused_vote_asks_before_losing_it(qtbot, window, data_dir, monkeypatch):
    """The database stays locked until the user quits: the app asks, and Retry writes it."""
    send(qtbot, window, "Name a fruit.")
    wait_idle(qtbot, window)
    window.controller.session.store.db.execute("PRAGMA busy_timeout = 200")
    other = sqlite3.connect(paths.db_path(data_dir), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with qtbot.waitSignal(window.controller.vote_failed, timeout=5_000):
        window.vote_bar.buttons["right"].click()
    asked = []

    def question(parent, title, text, buttons, default):
        asked.append(text)
        if len(asked) == 1:  # still locked: the user retries after closing the other program
            other.rollback()
            other.close()
        return QMessageBox.StandardButton.Retry

    monkeypatch.setattr(QMessageBox, "question", question)
    window.close()
    assert len(asked) == 1 and "1 vote could not be written" in asked[0]
    votes = window.store.votes()
    assert len(votes) == 1 and votes[0]["choice"] == "right"


def test_scoring_while_switching_adapters(qtbot, window):
    """The switch waits for the scoring on that engine instead of failing as busy."""
    left = window.pickers["left"]  # base against base has nothing to score: v1 on the left
    with qtbot.waitSignal(window.controller.engines_changed, timeout=30_000):
        left.activated.emit(left.findText("v1", flags=Qt.MatchFlag.MatchStartsWith))
    send(qtbot, window, "Say hello.")
    wait_idle(qtbot, window)
    scored, failed = [], []
    window.controller.scores_ready.connect(lambda side, c: scored.append(c))
    window.controller.scores_failed.connect(lambda side, m: failed.append(m))
    window.panes["right"].scores_button.click()
    v1 = window.adapter_picker.findText("v1", flags=Qt.MatchFlag.MatchStartsWith)
    with qtbot.waitSignal(window.controller.engines_changed, timeout=30_000):
        window.adapter_picker.activated.emit(v1)
    qtbot.waitUntil(lambda: bool(scored or failed), timeout=30_000)
    assert failed == [] and window.findChild(QMessageBox, "error-dialog") is None
    assert "v1" in window.panes["right"].header.text()
    assert window.controller.engines["tuned"].adapter_name == "v1"


def test_the_panes_adapter_is_followed_through_rename_and_delete(qtbot, window, data_dir):
    picker = window.adapter_picker
    with qtbot.waitSignal(window.controller.engines_changed, timeout=30_000):
        picker.activated.emit(1)
    send(qtbot, window, "Say hello.")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=5_000):
        window.vote_bar.buttons["right"].click()
    done = []
    ops.run_op(window, partial(ops.rename_adapter, data_dir, "v1", "v1-final"), done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5_000)
    ops.wait_for_queries()  # the views re-read the adapters the rename announced
    assert picker.currentText().startswith("v1-final")
    assert "v1-final" in window.panes["right"].header.text()
    # Stats keeps the vote, under the adapter's name now
    assert [w.adapter for w in window.stats_view.winrates] == ["v1-final"]
    assert window.stats_view.winrates[0].wins == 1
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        ops.run_op(window, partial(ops.delete_adapter, data_dir, "v1-final"), done.append)
    assert picker.currentIndex() == 0 and "no adapter" in window.panes["right"].header.text()
    assert "was deleted" in window.statusBar().currentMessage()
