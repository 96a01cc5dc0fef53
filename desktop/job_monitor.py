"""The job monitor: a training job's process, drawn as it runs (progress, plots, log, answers).

A job is its own process, started with the same CLI a user would type
(``diptych train KIND … --progress jsonl``) through QProcess; the monitor draws the
progress lines it prints (``diptych.training.progress``). A crash or a kill of the job
never touches the app.
"""

from __future__ import annotations

import re
import shlex
import time

import pyqtgraph as pg
from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from diptych.models.drift import SETS as DRIFT_SETS
from diptych.training import progress as job_progress

PLOTS = (("loss", "loss"), ("reward", "reward / margin"), ("kl", "KL from base"))
# Where each plot sits (row, column, rows, columns): the reward, what a GRPO user watches,
# gets a whole row, so no title is cut in a 1280-pixel window beside the settings dock.
PLOT_CELLS = {"loss": (0, 0, 1, 1), "kl": (0, 1, 1, 1), "reward": (1, 0, 1, 2)}
# What the libraries print on stderr that tells a user nothing: progress bars, the Trainer's
# log dicts (the plots show them), warnings and the source line each warning quotes.
NOISE = re.compile(r"(\d+%\|)|(it/s\]|s/it\]|examples/s\])|^\s*\{'|Warning\b|^\s*warnings\.warn\(|"
                   r"^\s*warn\(|^\s*$")


class JobMonitor(QWidget):
    """Runs one job (or GRPO's dry run) at a time and draws its progress lines."""

    running_changed = Signal(bool)
    finished = Signal(str)  # the name of the adapter a job registered

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k, _ in PLOTS}
        self.last_line: dict | None = None
        self.finished_adapter: str | None = None
        self.writes_gguf = True  # the running job's kind writes a GGUF LoRA (Use shows)
        self.trial = False  # the process is GRPO's dry run (Try it), not a job
        self._reader = job_progress.Reader()
        self._stale_view = False  # the plots show the last job until the new one starts loading
        self._previous: dict | None = None  # the last job's view, back if the new one fails first
        self._eta: tuple[float, float] | None = None  # (ETA in s, when it was reported)

        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.phase = QLabel("No job running.")
        self.phase.setObjectName("job-phase")
        self.phase.setWordWrap(True)
        self.plots: dict[str, pg.PlotDataItem] = {}
        self.markers: dict[str, list[pg.InfiniteLine]] = {}  # plot -> where each phase of a job starts
        self._undrawn: list[str] = []  # the plots that do not show ``history`` yet
        self._redraw = QTimer(self)  # draws them one at a time (see _draw)
        self._redraw.setInterval(20)
        self._redraw.timeout.connect(self._draw_next)
        self.plot_widgets: dict[str, pg.PlotWidget] = {}
        grid = QGridLayout()
        for key, title in PLOTS:
            widget = pg.PlotWidget(title=title)
            widget.setBackground("w")
            widget.setMinimumHeight(150)
            widget.setMaximumHeight(210)  # both rows and the log below fit a 800-pixel window
            widget.showGrid(x=True, y=True, alpha=0.3)
            for side in ("left", "bottom"):  # grid lines at the labelled ticks only: the minor
                # ones cost about 40 ms a repaint, a stall at every progress line of a job
                widget.getAxis(side).setStyle(maxTickLevel=0)
            if key == "reward":  # GRPO: the spread within groups, and the held-out reward
                self.legend = widget.addLegend(offset=(5, 5), labelTextSize="8pt")
                self.spread = (widget.plot([], [], pen=pg.mkPen("#9ecae1")),
                               widget.plot([], [], pen=pg.mkPen("#9ecae1")))
                self.band = pg.FillBetweenItem(*self.spread, brush=pg.mkBrush(31, 119, 180, 40))
                widget.addItem(self.band)
                self.held_out = widget.plot([], [], pen=pg.mkPen("#d62728", width=2), symbol="s",
                                            symbolSize=5, symbolBrush="#d62728")
            self.plots[key] = widget.plot([], [], pen=pg.mkPen("#1f77b4", width=2),
                                          symbol="o", symbolSize=4)
            self.plot_widgets[key] = widget
            grid.addWidget(widget, *PLOT_CELLS[key])
        grid.setColumnStretch(0, 1)  # loss and KL share the row: neither is squeezed to a sliver
        grid.setColumnStretch(1, 1)
        self.log = QPlainTextEdit()
        self.log.setObjectName("job-log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.summary = QLabel()
        self.summary.setObjectName("job-summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.use_button = QPushButton("Use in tuned pane")
        self.use_button.setObjectName("job-use")
        self.use_button.setVisible(False)
        self.answers = QPlainTextEdit()  # plain text: answers are shown exactly as written
        self.answers.setObjectName("job-answers")
        self.answers.setReadOnly(True)
        self.answers.setPlaceholderText("GRPO: answers and their rewards appear here, from "
                                        "Try it and every few steps while a job trains.")
        self.eta_timer = QTimer(self)  # the ETA counts down between steps
        self.eta_timer.setInterval(1000)
        self.eta_timer.timeout.connect(self._show_eta)

        right = QVBoxLayout(self)
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.phase)
        right.addWidget(self.progress)
        right.addLayout(grid, 3)
        result_row = QHBoxLayout()
        result_row.addWidget(self.summary, 1)
        result_row.addWidget(self.use_button)
        right.addLayout(result_row)
        right.addWidget(self.answers, 3)  # what the model writes now: the point of watching
        right.addWidget(self.log, 1)

    # -- the job -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None

    def start_job(self, args: list[str], writes_gguf: bool) -> None:
        """Run the job ``args``; the last job's plots stay until this one starts loading."""
        self._stale_view = True
        self.use_button.setVisible(False)
        self.finished_adapter = None
        self.writes_gguf = writes_gguf
        self._launch(args)

    def _clear_view(self) -> None:
        """An empty view for the job that starts; the last one's is kept until it draws."""
        self._previous = {"history": self.history, "summary": self.summary.text(),
                          "answers": self.answers.toPlainText()}
        self.history = {k: [] for k, _ in PLOTS}
        self.summary.clear()
        self.answers.clear()
        self._stale_view = False
        self._draw()
        for widget in self.plot_widgets.values():  # the new job's ranges, not the last one's
            widget.enableAutoRange()

    def _restore_view(self) -> None:
        """The new job failed before it drew anything: the last job's view comes back."""
        if self._previous is None or any(self.history.values()):
            return
        self.history = self._previous["history"]
        self.summary.setText(self._previous["summary"])
        self.answers.setPlainText(self._previous["answers"])
        self._previous = None
        self._draw()

    def _draw(self) -> None:
        """Redraw the plots from ``history``; only the plots the job reports are shown (an
        SFT job has no reward, a reward model no KL). The curves follow one plot per turn
        of the event loop: repainting all three at once stalls the window for tens of
        milliseconds while a job keeps the cores busy."""
        self.plot_widgets["reward"].setVisible(bool(self.history.get("reward") or self.history.get("held_out")))
        self.plot_widgets["kl"].setVisible(bool(self.history.get("kl")))
        self._undrawn = [key for key, _ in PLOTS]
        self._redraw.start()

    @property
    def drawn(self) -> bool:
        """Every plot shows ``history`` (tests wait for it)."""
        return not self._undrawn

    def _draw_next(self) -> None:
        if not self._undrawn:
            self._redraw.stop()
            return
        key = self._undrawn.pop(0)
        widget = self.plot_widgets[key]
        self.plots[key].setData(*_columns(self.history.get(key), 2))
        if key == "reward":
            xs, low, high = _columns(self.history.get("spread"), 3)
            self.spread[0].setData(xs, low)
            self.spread[1].setData(xs, high)
            self.held_out.setData(*_columns(self.history.get("held_out"), 2))
            self.legend.clear()  # named only where there is one (GRPO; not DPO's margin)
            if self.history.get("held_out"):
                self.legend.addItem(self.held_out, "held-out")
        for marker in self.markers.pop(key, []):
            widget.removeItem(marker)
        for step, text in self.history.get("markers", []):
            marker = pg.InfiniteLine(step, angle=90, pen=pg.mkPen("#555", style=Qt.PenStyle.DashLine),
                                     label=text, labelOpts={"position": 0.9, "color": "#555"})
            widget.addItem(marker)
            self.markers.setdefault(key, []).append(marker)

    def try_rewards(self, args: list[str]) -> None:
        """GRPO's dry run: a few answers of the model as it is, with their rewards."""
        self.answers.clear()
        self.summary.clear()
        self.use_button.setVisible(False)  # what it tries is not the last job's adapter
        self._launch(args)
        self.phase.setText("Sampling and scoring a few answers…")

    def _launch(self, args: list[str]) -> None:
        self.trial = "--dry-run" in args
        self.log.clear()
        self.last_line = None
        self._eta = None
        self._reader = job_progress.Reader()
        self._append_log("$ diptych " + shlex.join(args[3:]))  # as typed: not "python -m diptych"
        process = QProcess(self)
        process.setProgram(args[0])
        process.setArguments(args[1:])
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._finished)
        process.errorOccurred.connect(self._process_error)
        self.process = process
        self._set_running(True)
        self.phase.setText("Starting…")
        process.start()

    def _append_log(self, line: str) -> None:
        """Add a line and follow it, unless the user scrolled up to read."""
        bar = self.log.verticalScrollBar()
        following = bar.value() >= bar.maximum() - 2
        self.log.appendPlainText(line)
        if following:
            bar.setValue(bar.maximum())

    def cancel(self) -> None:
        """SIGTERM: the job stops cleanly and leaves no adapter; SIGKILL if it lingers."""
        if self.process is not None:
            self.phase.setText("Cancelling…")
            self.process.terminate()
            proc = self.process
            QTimer.singleShot(15_000, lambda: proc.state() != QProcess.ProcessState.NotRunning
                              and proc.kill())

    def _set_running(self, running: bool) -> None:
        if running:
            self.eta_timer.start()
        else:
            self.eta_timer.stop()
        self.progress.setRange(0, 0 if running else 1)
        self.running_changed.emit(running)

    def _read_stdout(self) -> None:
        for line in self._reader.feed(bytes(self.process.readAllStandardOutput())):
            self.handle_line(line)

    def _read_stderr(self) -> None:
        self.log_stderr(bytes(self.process.readAllStandardError()).decode("utf-8", "replace"))

    def log_stderr(self, text: str) -> None:
        """The job's stderr in the log, less the libraries' noise (see NOISE)."""
        for line in re.split(r"[\r\n]+", text):  # a progress bar redraws itself with \r
            if not NOISE.search(line):
                self._append_log(line)

    def _show_eta(self) -> None:
        """Between steps the ETA counts down from the last step's estimate."""
        if self._eta is None:
            return
        eta, at = self._eta
        left = max(0.0, eta - (time.monotonic() - at))
        self.progress.setFormat("step %v / %m" + (f" · ETA {job_progress.duration(left)}" if left else ""))

    def handle_line(self, line: str) -> None:
        """Draw one progress line of the job."""
        event = job_progress.parse(line)
        if event is None:
            self._append_log(line)
            return
        self.last_line = event
        phase = event.phase
        if self._stale_view and phase != "error":  # the new job has started: its own view
            self._clear_view()
        step, total = event.get("step"), event.get("total")
        self._log_event(event)
        self._eta = None
        if total:
            self.progress.setRange(0, int(total))
            self.progress.setValue(int(step or 0))
            eta = event.get("eta_s")
            if phase == "drift":
                self.progress.setFormat(f"{DRIFT_SETS.get(event.get('set'), '')}: %v / %m")
            else:
                self.progress.setFormat("step %v / %m" + (f" · ETA {job_progress.duration(eta)}" if eta else ""))
                if eta and phase == "train":
                    self._eta = (float(eta), time.monotonic())
        labels = {**job_progress.PHASES,
                  "eval": "Training" if phase == "eval" and step else "Evaluating the base…",
                  "error": "Failed: " + str(event.get("error"))}
        stage = job_progress.STAGES.get(event.get("stage"))
        if stage is not None and phase in ("train", "stage"):
            labels["train"] = labels["stage"] = stage[0]
        self.phase.setText(labels.get(phase, phase))
        if phase == "stage" and step is not None:  # where a phase of the job starts
            self.history.setdefault("markers", []).append((int(step), (stage or job_progress.STAGES["grpo"])[1]))
        if phase in ("train", "eval") and step is not None:
            for key, _ in PLOTS:
                if event.get(key) is not None and (phase == "train" or key == "kl"):
                    self.history[key] = sorted({**dict(self.history[key]), int(step): float(event[key])}.items())
            if event.get("reward_std") is not None and event.get("reward") is not None:
                self.history.setdefault("spread", []).append(
                    (int(step), event["reward"] - event["reward_std"], event["reward"] + event["reward_std"]))
        if phase == "eval" and event.get("reward") is not None:
            self.history.setdefault("held_out", []).append((int(step or 0), float(event["reward"])))
            ended = (f", {event['ended']} of {event['n']} ended by themselves"
                     if event.get("ended") is not None and event.get("n") else "")
            self.answers.setPlainText(f"Held-out answers at step {step or 0} (greedy), mean reward "
                                      f"{event['reward']:.3f}{ended}:\n\n" + _answers(event.get("samples") or []))
        if phase == "sample":
            self.answers.appendPlainText(_answers([event]))
        if phase == "done" and event.get("dry_run"):
            self.summary.setText(f"Scored by {event.get('reward')} in {event.get('seconds')} s; "
                                 "nothing was trained.")
        elif phase == "done":
            self.finished_adapter = event.get("adapter")
            self.summary.setText("<br>".join(job_progress.summary(
                event.get("metrics") or {}, event.get("drift") or {}, event.get("data") or {},
                DRIFT_SETS, strong=lambda text: f"<b>{text}</b>")))
        if phase in ("stage", "train", "eval"):
            self._draw()
        if phase == "error":  # the last job's plots and evaluation stay: only this start failed
            self._restore_view()
            self.phase.setText(f"Failed: {event.get('error')}")

    def _log_event(self, event: dict) -> None:
        """A progress line, as a person would write it in the log (the CLI's own lines)."""
        text = job_progress.human(event, DRIFT_SETS)
        if text is not None:
            self._append_log(text)

    def _finished(self, code: int, status) -> None:
        self._set_running(False)
        self.process = None
        self._eta = None
        phase = (self.last_line or {}).get("phase")
        if phase == "done" and self.trial:
            self.progress.setRange(0, 1)
            self.progress.setFormat("tried")
            self.phase.setText("Tried: answers and rewards below. Start trains with these rewards.")
        elif phase == "done" and self.finished_adapter:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("done")
            self.use_button.setVisible(self.writes_gguf)
            self.finished.emit(self.finished_adapter)
        elif phase not in ("cancelled", "error"):  # no done line: a failure, whatever the code
            how = ("it crashed (killed by a signal)" if status == QProcess.ExitStatus.CrashExit
                   else f"exit code {code}")
            what = "tried nothing" if self.trial else "no adapter was registered"
            self.phase.setText(f"The job ended unexpectedly ({how}); {what}.")
            self.progress.setFormat("failed")
        else:
            self.progress.setFormat(phase)

    def _process_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._set_running(False)
            self.process = None
            self.phase.setText("The job could not be started.")


def _columns(rows: list[tuple] | None, width: int) -> list[list]:
    """``rows`` of ``width`` values as that many columns (empty ones when there are none)."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def _answers(samples: list[dict]) -> str:
    """Answers with their rewards, as plain text."""
    lines = []
    for sample in samples:
        scores = sample.get("rewards") or {}
        detail = (" (" + ", ".join(f"{k} {job_progress.number(v)}" for k, v in scores.items()) + ")"
                  if len(scores) > 1 else "")
        lines.append(f"[{job_progress.number(sample.get('reward'))}{detail}] {sample.get('prompt', '')!s}\n"
                     f"    → {sample.get('answer', '')}")
    return "\n".join(lines)
