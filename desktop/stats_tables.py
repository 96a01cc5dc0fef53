"""The Stats tab's tables: read-only, numbers right-aligned, as tall as their rows."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from diptych.training.store import BASE
from diptych.training.winrates import Rating


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def fill_table(table: QTableWidget, rows: list[list[str]], numbers: range) -> None:
    """Rows of text into a read-only table, numbers right-aligned, as tall as its rows
    (up to ten) so it needs no scroll bar."""
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            if c in numbers:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(r) for r in range(min(len(rows), 10)))
    # room for the sideways scroll bar a wide table gets in a narrow window
    table.setFixedHeight(height + 2 + table.horizontalScrollBar().sizeHint().height())


MIN_GAMES = 5  # fewer, and a bootstrap interval says nothing (two games resample to one)


def interval_text(rating: Rating) -> str:
    if rating.model == BASE:
        return "reference"  # the scale is anchored on the base: its interval is 0 … 0
    if rating.games < MIN_GAMES:
        return f"needs {MIN_GAMES}+ games"
    if rating.high - rating.low < 1:  # every resample the same: no spread to read off
        return "wide: every game went one way"
    return f"{rating.low:+.0f} … {rating.high:+.0f}"


def new_table(columns: tuple[str, ...], name: str) -> QTableWidget:
    table = QTableWidget(0, len(columns), objectName=name)
    # "Your answer" over two lines: the columns are as wide as their numbers, not their names
    table.setHorizontalHeaderLabels([column.replace(" ", "\n", 1) for column in columns])
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
    header = table.horizontalHeader()
    # Names keep their width (a squeezed "l…" names nothing); the last column takes the slack
    # and a narrow window scrolls sideways.
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table
