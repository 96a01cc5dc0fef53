"""The stats tab: how far each adapter has moved from the base, in the user's own votes.

Three views of ``diptych.training.winrates``: a table of each adapter's votes against the
base with its win rate and 95% interval, a plot of that win rate across adapter versions
in the order the user first voted on them, and Bradley-Terry ratings of every model that
met another. Once adapters' KL from the base is known (``set_kl``, or read from their
``meta.json`` metrics by ``set_adapters``), a second plot sets win rate against KL: how
much preference each adapter bought with how much drift.

Win rates are computed on the UI thread (a pass over the votes); the ratings' bootstrap
takes about 70 ms, so it runs through ``run_op`` on the votes read here, and the Store is
never touched off the UI thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from diptych.training.store import BASE, Store
from diptych.training.winrates import AdapterWinrate, Rating, adapter_winrates, ratings

from .workers import run_op

if TYPE_CHECKING:
    from diptych.models.adapters import AdapterInfo

HOW_TIES_COUNT = (
    "Each adapter against the base, from your votes. A tie counts as half a win and half a "
    "loss; “both bad” votes and your own better answers say nothing about which of the two "
    "is better, so they are counted here but left out of the win rate. The 95% interval is "
    "the Wilson score interval.")
RATINGS_NOTE = (
    "Bradley–Terry ratings from every vote with a winner or a tie, on the Elo scale with the "
    "base at 0: +100 wins about 64% of the time against 0. Intervals: 95% bootstrap.")
WINRATE_COLUMNS = ("Adapter", "Votes", "Wins", "Losses", "Ties", "Both bad", "Own answer",
                   "Win rate", "95% interval", "First vote")
RATING_COLUMNS = ("Model", "Rating", "95% interval", "Games")


def kl_from_base(metrics: dict) -> float | None:
    """An adapter's KL from the base as its training job measured it, if it did."""
    for value in ((metrics.get("after") or {}).get("kl"), metrics.get("kl_from_base")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _fill(table: QTableWidget, rows: list[list[str]], numbers: range) -> None:
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
    table.setFixedHeight(height + 2)


def _interval(rating: Rating) -> str:
    if rating.model == BASE:
        return "reference"  # the scale is anchored on the base: its interval is 0 … 0
    return f"{rating.low:+.0f} … {rating.high:+.0f}"


def _table(columns: tuple[str, ...], name: str) -> QTableWidget:
    table = QTableWidget(0, len(columns), objectName=name)
    table.setHorizontalHeaderLabels(columns)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the names take the slack
    return table


class StatsView(QWidget):
    """Win rates against the base, their plot, the ratings, and (when known) win rate vs KL."""

    ratings_updated = Signal()  # the ratings table shows the latest votes

    def __init__(self, store: Store, parent=None):
        super().__init__(parent)
        self.store = store
        self.winrates: list[AdapterWinrate] = []
        self.kl: dict[str, float] = {}
        self._generation = 0  # drops ratings that a newer refresh has overtaken

        explainer = QLabel(HOW_TIES_COUNT, objectName="ties-note")
        explainer.setWordWrap(True)
        self.empty_note = QLabel("No votes between an adapter and the base yet: vote on the "
                                 "Chat tab with an adapter in the tuned pane.")
        self.empty_note.setStyleSheet("color: gray")
        self.winrate_table = _table(WINRATE_COLUMNS, "winrate-table")

        self.winrate_plot = self._plot("winrate-plot", "Win rate against the base",
                                       "adapter, in the order first voted on")
        self.winrate_points: pg.PlotDataItem | None = None
        self.kl_plot = self._plot("kl-plot", "Win rate against KL from the base",
                                  "KL from the base")
        self.kl_points: pg.PlotDataItem | None = None
        self.kl_plot.hide()

        self.ratings_table = _table(RATING_COLUMNS, "ratings-table")
        self.ratings_note = QLabel(RATINGS_NOTE, objectName="ratings-note")
        self.ratings_note.setWordWrap(True)
        ratings_box = QGroupBox("Ratings")
        box = QVBoxLayout(ratings_box)
        box.addWidget(self.ratings_table)
        box.addWidget(self.ratings_note)
        box.addStretch(1)

        against_base = QGroupBox("Tuned against base")
        left = QVBoxLayout(against_base)
        left.addWidget(explainer)
        left.addWidget(self.empty_note)
        left.addWidget(self.winrate_table)
        left.addStretch(1)
        tables = QHBoxLayout()
        tables.addWidget(against_base, 3)
        tables.addWidget(ratings_box, 2)
        plots = QHBoxLayout()
        plots.addWidget(self.winrate_plot, 1)
        plots.addWidget(self.kl_plot, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(tables)
        layout.addLayout(plots, 1)

        self.refresh()

    # -- public ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute from the store: the table and plots now, the ratings when the
        bootstrap is done (``ratings_updated``)."""
        votes = self.store.votes()
        self.winrates = adapter_winrates(votes)
        self._show_winrates()
        self._plot_winrates()
        self._plot_kl()
        self._generation += 1
        generation = self._generation
        self.ratings_note.setText("Computing ratings…")
        run_op(lambda: (generation, ratings(votes)), success=self._show_ratings,
               failure=self._ratings_failed, parent=self)

    def set_kl(self, kl: dict[str, float]) -> None:
        """Each adapter's KL from the base; adapters with a win rate get a point on the KL plot."""
        self.kl = dict(kl)
        self._plot_kl()

    def set_adapters(self, infos: Iterable[AdapterInfo]) -> None:
        """Take the KL values from registered adapters' ``meta.json`` metrics."""
        self.set_kl({info.name: kl for info in infos
                     if (kl := kl_from_base(info.metrics or {})) is not None})

    # -- table and ratings -----------------------------------------------------------

    def _show_winrates(self) -> None:
        rows = []
        for w in self.winrates:
            interval = "—" if w.low is None else f"{w.low:.0%} – {w.high:.0%}"
            counts = (w.wins + w.losses + w.ties + w.both_bad + w.better, w.wins, w.losses,
                      w.ties, w.both_bad, w.better)
            rows.append([w.adapter, *map(str, counts), _percent(w.win_rate), interval,
                         w.first_vote_at[:10]])
        _fill(self.winrate_table, rows, numbers=range(1, 9))
        self.empty_note.setVisible(not rows)
        self.winrate_table.setVisible(bool(rows))

    def _show_ratings(self, result: tuple[int, list[Rating]]) -> None:
        generation, rated = result
        if generation != self._generation:
            return
        _fill(self.ratings_table, [[r.model, f"{r.rating:+.0f}", _interval(r), str(r.games)]
                                   for r in rated], numbers=range(1, 4))
        self.ratings_table.setVisible(bool(rated))
        self.ratings_note.setText(RATINGS_NOTE if rated else
                                  "Ratings appear once two models have met in a vote "
                                  "with a winner or a tie.")
        self.ratings_updated.emit()

    def _ratings_failed(self, exc: BaseException) -> None:
        self.ratings_note.setText(f"Ratings could not be computed: {exc}")

    # -- plots -----------------------------------------------------------------------

    def _plot(self, name: str, title: str, x_label: str) -> pg.PlotWidget:
        """A plot in the widget palette's colours, win rate (%) up the side."""
        plot = pg.PlotWidget(objectName=name)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        plot.setBackground(palette.color(QPalette.ColorRole.Base))
        plot.setTitle(title, color=text.name())
        for side, label in (("left", "win rate (%)"), ("bottom", x_label)):
            axis = plot.getAxis(side)
            axis.setPen(text)
            axis.setTextPen(text)
            axis.setLabel(label)
            axis.enableAutoSIPrefix(False)  # "KL (x0.001)" reads worse than 0.012
        plot.showGrid(y=True, alpha=0.2)
        plot.setMouseEnabled(x=False, y=False)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMinimumSize(280, 220)
        return plot

    def _draw(self, plot: pg.PlotWidget, xs: list[float], rows: list[AdapterWinrate],
              labels: bool) -> pg.PlotDataItem:
        """Win rates at ``xs`` with their intervals, over a dashed line at 50%: as good as the base."""
        plot.clear()
        dashed = pg.mkPen((128, 128, 128), style=Qt.PenStyle.DashLine)
        plot.addItem(pg.InfiniteLine(50, angle=0, pen=dashed))
        x = np.array(xs, dtype=float)
        y = np.array([100 * r.win_rate for r in rows])
        low = np.array([100 * r.low for r in rows])
        high = np.array([100 * r.high for r in rows])
        color = (33, 118, 210)
        beam = 0.15 if not labels else 0.0
        plot.addItem(pg.ErrorBarItem(x=x, y=y, top=high - y, bottom=y - low, beam=beam,
                                     pen=pg.mkPen(color, width=2)))
        points = plot.plot(x, y, pen=None if labels else pg.mkPen(color, width=1),
                           symbol="o", symbolSize=10, symbolBrush=color, symbolPen="w")
        if labels:
            text = self.palette().color(QPalette.ColorRole.Text)
            background = self.palette().color(QPalette.ColorRole.Base)
            background.setAlpha(200)  # readable where a name crosses an error bar
            right_edge = 0.6 * x.max()
            for xi, yi, row in zip(x, y, rows):
                # Names near the right edge go to the left of their point, so none is cut off.
                anchor = (1.1, 0.5) if xi > right_edge and xi > 0 else (-0.1, 0.5)
                item = pg.TextItem(row.adapter, color=text, anchor=anchor, fill=background)
                item.setPos(xi, yi)
                plot.addItem(item)
        plot.setYRange(0, 100, padding=0.05)
        return points

    def _plot_winrates(self) -> None:
        rated = [(i, row) for i, row in enumerate(self.winrates) if row.win_rate is not None]
        self.winrate_points = self._draw(self.winrate_plot, [i for i, _ in rated],
                                         [row for _, row in rated], labels=False)
        ticks = [(i, row.adapter) for i, row in enumerate(self.winrates)]
        self.winrate_plot.getAxis("bottom").setTicks([ticks])
        self.winrate_plot.setXRange(-0.5, max(len(self.winrates), 1) - 0.5, padding=0.05)

    def _plot_kl(self) -> None:
        rows = [row for row in self.winrates if row.win_rate is not None and row.adapter in self.kl]
        self.kl_plot.setVisible(bool(rows))
        if not rows:
            self.kl_points = None
            return
        kl = [self.kl[row.adapter] for row in rows]
        self.kl_points = self._draw(self.kl_plot, kl, rows, labels=True)
        self.kl_plot.setXRange(0, max(kl) * 1.25 or 1.0)
