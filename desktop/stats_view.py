"""The stats tab: how far each adapter has moved from the base, in the user's own votes.

Three views of ``diptych.training.winrates``: a table of each adapter's votes against the
base with its win rate and 95% interval, a plot of that win rate across adapter versions
in the order the user first voted on them, and Bradley-Terry ratings of every model that
met another. A drift table lists each adapter's mean per-token KL from the base on the
held-out prompts and on the user's recent prompts (``diptych.models.drift``, stored in the
adapter's meta.json; "Measure" runs it again in a worker with its own pair of engines),
and a second plot sets win rate against the held-out KL: how much preference each
adapter bought with how much drift.

The votes and the adapters are read through ``ops.run_query`` (off the UI thread); win
rates are computed on the UI thread (a pass over the votes read); the ratings' bootstrap
takes about 70 ms, so it runs through ``ops.run_op``. The view redraws when an operation
changed the votes or the adapters (``ops.hub()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from diptych.models import adapters as registry
from diptych.models import drift
from diptych.training import lineage
from diptych.training.store import Store
from diptych.training.winrates import (AdapterWinrate, Rating, adapter_winrates, parent_winrates,
                                       ratings)

from . import ops
from .stats_tables import fill_table, interval_text, percent, new_table

if TYPE_CHECKING:
    from diptych.models.adapters import AdapterInfo

HOW_TIES_COUNT = (
    "Each adapter against the base, from your votes. A tie counts as half a win and half a "
    "loss; “both bad” votes and your answers (Write a better answer…) say nothing about "
    "which of the two is better, so they are counted here but left out of the win rate. "
    "The 95% interval is the Wilson score interval.")
RATINGS_NOTE = (
    "Bradley–Terry ratings from every vote with a winner or a tie, on the Elo scale with the "
    "base at 0: +100 wins about 64% of the time against 0. Intervals: 95% bootstrap.")
WINRATE_COLUMNS = ("Adapter", "Votes", "Wins", "Losses", "Ties", "Both bad", "Your answer",
                   "Win rate", "95% interval", "First vote")
RATING_COLUMNS = ("Model", "Rating", "95% interval", "Games")
VERSION_COLUMNS = ("Version", "Lineage", "Against base", "Against parent", "Votes with parent")
VERSIONS_NOTE = (
    "Adapters trained with “Continue…” (--from) and the versions they continue. “Against "
    "parent” counts the votes between a version and its parent: pick the parent in one pane "
    "and the version in the other to cast them. Ties count half, as above.")
DRIFT_COLUMNS = ("Adapter", "Kind", "KL, held-out", "KL, your prompts", "Measured")
DRIFT_NOTE = (
    f"Mean KL(tuned ‖ base) per token, in nats, along answers the tuned model samples "
    f"itself (up to {drift.MAX_TOKENS} tokens each): on {len(drift.held_out_prompts())} "
    f"held-out prompts no training sees, and on your {drift.RECENT} latest prompts. 0 means "
    "unchanged; the plot below uses the held-out value.")


class StatsView(QWidget):
    """Win rates against the base, their plot, the ratings, and (when known) win rate vs KL."""

    ratings_updated = Signal()  # the ratings table shows the latest votes
    drift_recorded = Signal(str)  # an adapter's meta.json has a new drift measurement
    drift_progress = Signal(str, int, int)  # set, prompts done, total (from a worker)

    def __init__(self, store: Store, model_path: Callable[[], Path | None] = lambda: None,
                 parent=None, data_dir: Path | None = None):
        super().__init__(parent)
        self.store = store  # read by queries, off the UI thread
        self.data_dir = data_dir  # where the adapters are (None: told by set_adapters)
        self.model_path = model_path
        self.winrates: list[AdapterWinrate] = []
        self.kl: dict[str, float] = {}
        self.adapters: list[AdapterInfo] = []  # those llama.cpp can run, newest first
        self.measuring: str | None = None
        self.aliases: dict[str, str] = {}  # an adapter's former names -> its name now
        self.parents: dict[str, str] = {}  # version -> the adapter it continues
        self.versus_parent: list[AdapterWinrate] = []
        self._generation = 0  # drops ratings that a newer refresh has overtaken

        explainer = QLabel(HOW_TIES_COUNT, objectName="ties-note")
        explainer.setWordWrap(True)
        self.empty_note = QLabel("No votes between an adapter and the base yet: vote on the "
                                 "Chat tab with an adapter in the tuned pane.")
        self.empty_note.setStyleSheet("color: gray")
        self.empty_note.setWordWrap(True)
        self.winrate_table = new_table(WINRATE_COLUMNS, "winrate-table")

        self.winrate_plot = self._plot("winrate-plot", "Win rate against the base",
                                       "adapter, in the order first voted on")
        self.winrate_points: pg.PlotDataItem | None = None
        self.kl_plot = self._plot("kl-plot", "Win rate against KL from the base",
                                  "KL(tuned ‖ base) per token, held-out prompts")
        self.kl_points: pg.PlotDataItem | None = None
        self.kl_plot.hide()

        self.ratings_table = new_table(RATING_COLUMNS, "ratings-table")
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

        drift_box = QGroupBox("Drift from the base")
        self.drift_table = new_table(DRIFT_COLUMNS, "drift-table")
        self.drift_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.drift_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.drift_table.itemSelectionChanged.connect(self._update_measure_button)
        drift_note = QLabel(DRIFT_NOTE, objectName="drift-note")
        drift_note.setWordWrap(True)
        self.measure_button = QPushButton("Measure selected")
        self.measure_button.setToolTip("Sample answers from the selected adapter and measure its "
                                       "KL from the base (about 20 s per prompt set)")
        self.measure_button.clicked.connect(self._measure_selected)
        self.drift_status = QLabel("", objectName="drift-status")
        self.drift_status.setWordWrap(True)
        self.drift_progress.connect(self._show_drift_progress)
        actions = QHBoxLayout()
        actions.addWidget(self.measure_button)
        actions.addWidget(self.drift_status, 1)
        box = QVBoxLayout(drift_box)
        box.addWidget(drift_note)
        box.addWidget(self.drift_table)
        box.addLayout(actions)
        box.addStretch(1)

        self.versions_box = QGroupBox("Versions")
        self.versions_table = new_table(VERSION_COLUMNS, "versions-table")
        versions_note = QLabel(VERSIONS_NOTE, objectName="versions-note")
        versions_note.setWordWrap(True)
        box = QVBoxLayout(self.versions_box)
        box.addWidget(versions_note)
        box.addWidget(self.versions_table)
        self.versions_box.hide()  # until an adapter continues another

        # One column: each table has the tab's whole width, so a 1024-pixel window shows
        # every column (the tab scrolls down instead).
        tables = QVBoxLayout()
        for box in (against_base, self.versions_box, drift_box, ratings_box):
            tables.addWidget(box)
        plots = QHBoxLayout()
        plots.addWidget(self.winrate_plot, 1)
        plots.addWidget(self.kl_plot, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(tables)
        layout.addLayout(plots, 1)

        ops.hub().changed.connect(self._on_changes)
        self.refresh()
        self.reload_adapters()

    def _on_changes(self, changes, initiator) -> None:
        if changes.votes:
            self.refresh()
        if changes.adapters and initiator is not self:  # a drift measured here is shown
            self.reload_adapters()

    def reload_adapters(self) -> None:
        """Re-read the adapters (off the UI thread), then ``set_adapters``."""
        if self.data_dir is not None:
            root = self.data_dir
            ops.run_query(self, lambda: registry.list_adapters(root), self.set_adapters)

    # -- public ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the votes (off the UI thread); then the table and plots, and the
        ratings when the bootstrap is done (``ratings_updated``)."""
        ops.run_query(self, self.store.votes, self._show_votes)

    def _show_votes(self, votes: list[dict]) -> None:
        self._votes = votes
        self._recompute()

    def _recompute(self) -> None:
        votes = [self._current_names(vote) for vote in getattr(self, "_votes", [])]
        self.winrates = adapter_winrates(votes)
        self.versus_parent = parent_winrates(votes, self.parents)
        self._show_winrates()
        self._show_versions()
        self._plot_winrates()
        self._plot_kl()
        self._generation += 1
        generation = self._generation
        self.ratings_note.setText("Computing ratings…")
        ops.run_op(self, lambda: (generation, ratings(votes)), self._show_ratings,
                   self._ratings_failed)

    def _current_names(self, vote: dict) -> dict:
        """The vote with each adapter under its current name (a rename keeps its votes)."""
        renamed = {side: self.aliases[vote[side]["adapter"]] for side in ("left", "right")
                   if vote[side]["adapter"] in self.aliases}
        return {**vote, **{side: {**vote[side], "adapter": name} for side, name in renamed.items()}}

    def set_kl(self, kl: dict[str, float]) -> None:
        """Each adapter's KL from the base; adapters with a win rate get a point on the KL plot."""
        self.kl = dict(kl)
        self._plot_kl()

    def set_adapters(self, infos: Iterable[AdapterInfo]) -> None:
        """List the adapters llama.cpp can run with their stored drift; plot the held-out KL."""
        infos = list(infos)
        self.adapters = [info for info in infos if info.gguf_path is not None]
        aliases = {old: info.name for info in infos for old in registry.names(info)[1:]}
        parents = lineage.parents(infos)
        if aliases != self.aliases or parents != self.parents:
            self.aliases, self.parents = aliases, parents
            self._recompute()
        else:
            self._show_versions()
        self._show_drift()
        self.set_kl({info.name: kl for info in self.adapters
                     if (kl := registry.drift_kl(info)) is not None})

    def measure(self, name: str) -> None:
        """Measure an adapter's drift in a worker and store it in its meta.json;
        ``drift_recorded`` follows (or the status line says why not)."""
        info = next(i for i in self.adapters if i.name == name)
        model = self.model_path()
        if model is None:
            self.drift_status.setText("Load a model first.")
            return
        self.measuring = name
        self._update_measure_button()
        self.drift_status.setText(f"Measuring {name}…")

        def measure(recent):
            def op():
                results = drift.measure_adapter(model, info.gguf_path, recent,
                                                progress=self.drift_progress.emit)
                return ops.record_drift(info, results)

            ops.run_op(self, op, self._drift_measured, self._drift_failed)

        store = self.store
        ops.run_query(self, lambda: store.recent_prompts(drift.RECENT), measure, self._drift_failed)

    # -- table and ratings -----------------------------------------------------------

    def _show_winrates(self) -> None:
        rows = []
        for w in self.winrates:
            interval = "—" if w.low is None else f"{w.low:.0%} – {w.high:.0%}"
            counts = (w.wins + w.losses + w.ties + w.both_bad + w.better, w.wins, w.losses,
                      w.ties, w.both_bad, w.better)
            rows.append([w.adapter, *map(str, counts), percent(w.win_rate), interval,
                         w.first_vote_at[:10]])
        fill_table(self.winrate_table, rows, numbers=range(1, 9))
        self.empty_note.setVisible(not rows)
        self.winrate_table.setVisible(bool(rows))
        self.winrate_plot.setVisible(bool(rows))  # an empty plot says less than the note

    def _show_versions(self) -> None:
        """Each version's lineage, its win rate against the base and against its parent."""
        against_base = {w.adapter: w for w in self.winrates}
        against_parent = {w.adapter: w for w in self.versus_parent}

        def rate(w: AdapterWinrate | None) -> str:
            if w is None or w.win_rate is None:
                return "no votes yet"
            return f"{w.win_rate:.0%} ({w.low:.0%} – {w.high:.0%})"

        rows = []
        chains = {name: lineage.chain(name, self.parents) for name in self.parents}
        for name in sorted(chains, key=chains.get):
            w = against_parent.get(name)
            rows.append([name, " → ".join(chains[name]), rate(against_base.get(name)), rate(w),
                         str(w.wins + w.losses + w.ties if w else 0)])
        fill_table(self.versions_table, rows, numbers=range(2, 5))
        self.versions_box.setVisible(bool(rows))

    def _show_ratings(self, result: tuple[int, list[Rating]]) -> None:
        generation, rated = result
        if generation != self._generation:
            return
        fill_table(self.ratings_table, [[r.model, f"{r.rating:+.0f}", interval_text(r), str(r.games)]
                                   for r in rated], numbers=range(1, 4))
        self.ratings_table.setVisible(bool(rated))
        self.ratings_note.setText(RATINGS_NOTE if rated else
                                  "Ratings appear once two models have met in a vote "
                                  "with a winner or a tie.")
        self.ratings_updated.emit()

    def _ratings_failed(self, exc: BaseException) -> None:
        self.ratings_note.setText(f"Ratings could not be computed: {exc}")

    # -- drift -----------------------------------------------------------------------

    def _show_drift(self) -> None:
        selected = self._selected_adapter()
        rows = []
        for info in self.adapters:
            kls = [registry.drift_kl(info, which) for which in drift.SETS]
            when = max((d.get("measured_at", "") for d in (info.meta.get("drift") or {}).values()
                        if isinstance(d, dict)), default="")
            rows.append([info.name, info.kind, *("—" if kl is None else f"{kl:.4f}" for kl in kls),
                         when[:16].replace("T", " ") or "not yet"])
        fill_table(self.drift_table, rows, numbers=range(2, 4))
        self.drift_table.setVisible(bool(rows))
        names = [info.name for info in self.adapters]
        if selected in names:
            self.drift_table.selectRow(names.index(selected))
        if not rows:
            self.drift_status.setText("No adapter llama.cpp can run is registered: train one "
                                      "on the Train tab." if self.winrates else
                                      "No adapters yet: train one on the Train tab.")
        elif self.drift_status.text().startswith("No adapter"):
            self.drift_status.setText("")
        self._update_measure_button()

    def _selected_adapter(self) -> str | None:
        rows = self.drift_table.selectionModel().selectedRows()
        return self.drift_table.item(rows[0].row(), 0).text() if rows else None

    def _update_measure_button(self) -> None:
        self.measure_button.setEnabled(self.measuring is None and self._selected_adapter() is not None)

    def _measure_selected(self) -> None:
        name = self._selected_adapter()
        if name is not None:
            self.measure(name)

    def _show_drift_progress(self, which: str, done: int, total: int) -> None:
        if self.measuring:
            self.drift_status.setText(f"Measuring {self.measuring}: {drift.SETS[which]}, "
                                      f"prompt {done} of {total}…")

    def _drift_measured(self, info: AdapterInfo) -> None:
        self.measuring = None
        kls = ", ".join(f"{drift.SETS[k]} {registry.drift_kl(info, k):.4f}"
                        for k in drift.SETS if registry.drift_kl(info, k) is not None)
        self.drift_status.setText(f"{info.name}: KL from the base per token: {kls}.")
        self.adapters = [info if i.name == info.name else i for i in self.adapters]
        self.set_adapters(self.adapters)
        self.drift_recorded.emit(info.name)

    def _drift_failed(self, exc: BaseException) -> None:
        name, self.measuring = self.measuring, None
        self.drift_status.setText(f"Could not measure {name}: {exc}")
        self._update_measure_button()

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
