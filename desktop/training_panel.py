"""The training panel: start a LoRA job on your votes, watch it learn, use the result.

A job is its own process, started with the same CLI a user would type
(``diptych train KIND … --progress jsonl``) through QProcess; the panel draws the JSON
lines it prints. A crash or a kill of the job never touches the app.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from diptych.models import adapters as registry
from diptych.models.drift import SETS as DRIFT_SETS

KINDS = {
    "dpo": "DPO: make the answers you chose likelier (a LoRA for the tuned pane)",
    "reward": "Reward model: learn to score answers like you do (for GRPO)",
    "grpo": "GRPO: sample, score, reinforce the better answers (with a KL pull to the base)",
}
TASKS = {"length": "Answer in one short statement (length and format)",
         "arith": "Arithmetic (the number, then the right number)",
         "reverse_words": "Reverse the order of a sentence's words",
         "reverse": "Reverse a sentence letter by letter (hard)"}
PLOTS = (("loss", "loss"), ("reward", "reward / margin"), ("kl", "KL from base"))


def _optional_spin(spin: QSpinBox | QDoubleSpinBox, lo, hi, step=None, decimals=None):
    """A spin box whose lowest value reads 'default': unset options take the job's defaults."""
    spin.setRange(lo, hi)
    if decimals is not None:
        spin.setDecimals(decimals)
    if step is not None:
        spin.setSingleStep(step)
    spin.setSpecialValueText("default")
    spin.setValue(lo)
    return spin


class TrainingPanel(QWidget):
    adapter_ready = Signal(str)  # name of a finished adapter
    use_adapter = Signal(str)  # path of the GGUF LoRA the tuned pane should use
    adapters_changed = Signal()

    def __init__(self, data_dir: Path, store=None, model_path=None, parent=None):
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.store = store
        self.model_path = model_path  # callable returning the model the app has loaded
        self.process: QProcess | None = None
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k, _ in PLOTS}
        self.last_line: dict | None = None
        self.finished_adapter: str | None = None
        self.trial = False  # the process is GRPO's dry run (Try it), not a job
        self._stdout_buffer = b""

        # -- what to train -----------------------------------------------------------
        self.kind = QComboBox()
        for key, text in KINDS.items():
            self.kind.addItem(text, key)
        self.name = QLineEdit()
        self.name.setObjectName("job-name")
        self.source = QComboBox()
        self.source.setObjectName("job-source")
        self.source_count = QLabel()
        self.reward_model = QComboBox()
        self.reward_fn = QLineEdit()
        self.reward_fn.setObjectName("job-reward-fn")
        self.reward_fn.setPlaceholderText("optional: FILE.py:FUNCTION, your reward")
        self.reward_browse = QPushButton("…")
        self.reward_browse.setToolTip("Choose a Python file with a reward function")
        self.judge = QLineEdit()
        self.judge.setObjectName("job-judge")
        self.judge.setPlaceholderText("optional: a rubric, e.g. The answer is polite.")
        self.judge.setToolTip("The base model is asked whether each answer meets this rubric; "
                              "its P(yes) is a reward")
        self.steps = _optional_spin(QSpinBox(), 0, 100_000)
        self.lr = _optional_spin(QDoubleSpinBox(), 0.0, 1.0, step=1e-5, decimals=6)
        self.beta = _optional_spin(QDoubleSpinBox(), 0.0, 10.0, step=0.01, decimals=3)
        self.lora_r = _optional_spin(QSpinBox(), 0, 256)
        self.extra = QLineEdit()
        self.extra.setObjectName("job-extra")
        self.extra.setPlaceholderText("more options, e.g. --batch-size 2 --max-length 128")
        form = QFormLayout()
        form.addRow("Job", self.kind)
        form.addRow("Adapter name", self.name)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(self.source_count)
        form.addRow("Data", source_row)
        form.addRow("Reward model", self.reward_model)
        reward_row = QHBoxLayout()
        reward_row.addWidget(self.reward_fn, 1)
        reward_row.addWidget(self.reward_browse)
        self.reward_row = QWidget()
        self.reward_row.setLayout(reward_row)
        reward_row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Reward function", self.reward_row)
        form.addRow("Judge rubric", self.judge)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("KL weight (beta)", self.beta)
        form.addRow("LoRA rank", self.lora_r)
        form.addRow("Other options", self.extra)
        self.form = form

        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("job-start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.try_button = QPushButton("Try it")
        self.try_button.setObjectName("job-try")
        self.try_button.setToolTip("Sample a few answers with the model as it is and score them "
                                   "with these rewards; nothing is trained")
        buttons = QHBoxLayout()
        buttons.addWidget(self.try_button)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)

        # -- progress ----------------------------------------------------------------
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.phase = QLabel("No job running.")
        self.phase.setObjectName("job-phase")
        self.plots: dict[str, pg.PlotDataItem] = {}
        grid = QGridLayout()
        for col, (key, title) in enumerate(PLOTS):
            widget = pg.PlotWidget(title=title)
            widget.setBackground("w")
            widget.setMinimumHeight(150)
            widget.showGrid(x=True, y=True, alpha=0.3)
            if key == "reward":  # GRPO: the spread within groups, and the held-out reward
                widget.addLegend(offset=(5, 5), labelTextSize="8pt")
                self.spread = (widget.plot([], [], pen=pg.mkPen("#9ecae1")),
                               widget.plot([], [], pen=pg.mkPen("#9ecae1")))
                self.band = pg.FillBetweenItem(*self.spread, brush=pg.mkBrush(31, 119, 180, 40))
                widget.addItem(self.band)
                self.held_out = widget.plot([], [], pen=pg.mkPen("#d62728", width=2), symbol="s",
                                            symbolSize=5, symbolBrush="#d62728", name="held-out")
            self.plots[key] = widget.plot([], [], pen=pg.mkPen("#1f77b4", width=2),
                                          symbol="o", symbolSize=4)
            grid.addWidget(widget, 0, col)
        self.log = QPlainTextEdit()
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

        # -- adapters ----------------------------------------------------------------
        self.adapter_list = QListWidget()
        self.adapter_list.setObjectName("adapter-list")
        self.use_selected = QPushButton("Use in tuned pane")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete")
        adapter_buttons = QHBoxLayout()
        for b in (self.use_selected, self.rename_button, self.delete_button):
            adapter_buttons.addWidget(b)

        left = QVBoxLayout()
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(QLabel("<b>Adapters</b>"))
        left.addWidget(self.adapter_list, 1)
        left.addLayout(adapter_buttons)
        right = QVBoxLayout()
        right.addWidget(self.phase)
        right.addWidget(self.progress)
        right.addLayout(grid, 3)
        result_row = QHBoxLayout()
        result_row.addWidget(self.summary, 1)
        result_row.addWidget(self.use_button)
        right.addLayout(result_row)
        right.addWidget(self.answers, 3)  # what the model writes now: the point of watching
        right.addWidget(self.log, 1)
        layout = QHBoxLayout(self)
        left_box = QWidget()
        left_box.setLayout(left)
        left_box.setMaximumWidth(460)
        layout.addWidget(left_box)
        layout.addLayout(right, 1)

        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.source.activated.connect(self._source_picked)
        self.start_button.clicked.connect(self.start)
        self.try_button.clicked.connect(self.try_rewards)
        self.reward_browse.clicked.connect(self._browse_reward)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self._use(self.finished_adapter))
        self.use_selected.clicked.connect(lambda: self._use(self._selected()))
        self.rename_button.clicked.connect(self._rename)
        self.delete_button.clicked.connect(self._delete)
        self.adapter_list.currentItemChanged.connect(self._adapter_picked)
        self._kind_changed()
        self.refresh_adapters()

    # -- form --------------------------------------------------------------------------

    def current_kind(self) -> str:
        return self.kind.currentData()

    def _kind_changed(self, *_):
        kind = self.current_kind()
        self.name.setText(f"{kind}-{time.strftime('%m%d-%H%M')}")
        self.source.clear()
        if kind in ("dpo", "reward"):
            self.source.addItem("Your votes", "store")
        else:
            for key, text in TASKS.items():
                self.source.addItem(f"Task: {text}", f"task:{key}")
            self.source.addItem("Your chat history (prompts)", "history")
        self.source.addItem("A JSONL file…", "file")
        for row in (self.reward_model, self.reward_row, self.judge):
            self.form.setRowVisible(row, kind == "grpo")
        self.try_button.setVisible(kind == "grpo")
        self.answers.setVisible(kind == "grpo")
        self.form.setRowVisible(self.beta, kind in ("dpo", "grpo"))
        self.refresh_counts()

    def refresh_counts(self) -> None:
        """How much data the chosen source holds: usable pairs, or prompts."""
        data = self.source.currentData() or ""
        text = ""
        if self.store is not None and data == "store":
            counts = self.store.pair_counts()
            text = f"{counts.get('pairs', 0)} usable pairs"
        elif self.store is not None and data == "history":
            text = f"{len(self.store.recent_prompts(1000))} prompts"
        elif data.startswith("file:"):
            text = Path(data[5:]).name
        self.source_count.setText(text)

    def _source_picked(self, index: int) -> None:
        if self.source.itemData(index) == "file":
            path, _ = QFileDialog.getOpenFileName(self, "Training data", "",
                                                  "JSON lines (*.jsonl);;Text (*.txt)")
            if path:
                self.source.insertItem(index, Path(path).name, f"file:{path}")
                self.source.setCurrentIndex(index)
            else:
                self.source.setCurrentIndex(0)
        self.refresh_counts()

    def command(self, dry_run: bool = False) -> list[str]:
        """The exact ``diptych train`` command line this form describes (``--dry-run``:
        GRPO's Try it, which needs no name)."""
        kind = self.current_kind()
        args = [sys.executable, "-m", "diptych", "--data-dir", str(self.data_dir)]
        model = self.model_path() if callable(self.model_path) else self.model_path
        if model:
            args += ["--model", str(model)]
        args += ["train", kind, *(["--dry-run"] if dry_run else ["--name", self.name.text().strip()]),
                 "--progress", "jsonl"]
        data = self.source.currentData() or ""
        if data.startswith("file:"):
            args += ["--prompts-from" if kind == "grpo" else "--data", data[5:]]
        elif data.startswith("task:"):
            args += ["--task", data[5:]]
        elif data == "history":
            args += ["--prompts-from", "history"]
        if kind == "grpo" and self.reward_model.currentData():
            args += ["--reward-model", self.reward_model.currentData()]
        if kind == "grpo" and self.reward_fn.text().strip():
            args += ["--reward-fn", self.reward_fn.text().strip()]
        if kind == "grpo" and self.judge.text().strip():
            args += ["--judge", self.judge.text().strip()]
        for flag, spin in (("--steps", self.steps), ("--lr", self.lr), ("--lora-r", self.lora_r)):
            if spin.value() > spin.minimum():
                args += [flag, f"{spin.value():g}"]
        if kind in ("dpo", "grpo") and self.beta.value() > self.beta.minimum():
            args += ["--beta", f"{self.beta.value():g}"]
        return args + shlex.split(self.extra.text())

    # -- the job -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        if self.running:
            return
        try:
            registry.check_name(self.name.text().strip())
        except registry.AdapterError as exc:
            QMessageBox.warning(self, "Adapter name", str(exc))
            return
        self.history = {k: [] for k, _ in PLOTS}
        for curve in (*self.plots.values(), *self.spread, self.held_out):
            curve.setData([], [])
        self.summary.clear()
        self.use_button.setVisible(False)
        self.finished_adapter = None
        self.answers.clear()
        self._launch(self.command())

    def try_rewards(self) -> None:
        """GRPO's dry run: a few answers of the model as it is, with their rewards."""
        if self.running:
            return
        self.answers.clear()
        self.summary.clear()
        self._launch(self.command(dry_run=True))
        self.phase.setText("Sampling and scoring a few answers…")

    def _launch(self, args: list[str]) -> None:
        self.trial = "--dry-run" in args
        self.log.clear()
        self.last_line = None
        self._stdout_buffer = b""
        self.log.appendPlainText("$ " + " ".join(args[1:]))
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

    def _browse_reward(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reward function", "", "Python (*.py)")
        if not path:
            return
        names = reward_functions(Path(path))
        if not names:
            QMessageBox.warning(self, "Reward function", f"{Path(path).name} defines no function.")
            return
        name = names[0]
        if len(names) > 1:
            name, ok = QInputDialog.getItem(self, "Reward function", "Which function is the reward?",
                                            names, 0, False)
            if not ok:
                return
        self.reward_fn.setText(f"{path}:{name}")

    def cancel(self) -> None:
        """SIGTERM: the job stops cleanly and leaves no adapter; SIGKILL if it lingers."""
        if self.process is not None:
            self.phase.setText("Cancelling…")
            self.process.terminate()
            proc = self.process
            QTimer.singleShot(15_000, lambda: proc.state() != QProcess.ProcessState.NotRunning
                              and proc.kill())

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.try_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.kind.setEnabled(not running)
        self.progress.setRange(0, 0 if running else 1)

    def _read_stdout(self) -> None:
        self._stdout_buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._stdout_buffer = self._stdout_buffer.split(b"\n")
        for raw in lines:
            if raw.strip():
                self.handle_line(raw.decode("utf-8", "replace"))

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self.log.appendPlainText(line)

    def handle_line(self, line: str) -> None:
        """Draw one progress line of the job."""
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.log.appendPlainText(line)
            return
        self.last_line = event
        phase = event.get("phase", "")
        step, total = event.get("step"), event.get("total")
        if total:
            self.progress.setRange(0, int(total))
            self.progress.setValue(int(step or 0))
            eta = event.get("eta_s")
            if phase == "drift":
                self.progress.setFormat(f"{DRIFT_SETS.get(event.get('set'), '')}: %v / %m")
            else:
                self.progress.setFormat("step %v / %m" + (f" · ETA {_duration(eta)}" if eta else ""))
        labels = {"load": "Loading the base weights…", "eval_before": "Evaluating the base…",
                  "eval": "Training" if phase == "eval" and step else "Evaluating the base…",
                  "sample": "Sampling and scoring a few answers…",
                  "train": "Training", "eval_after": "Evaluating the adapter…",
                  "save": "Saving the adapter…",
                  "drift": "Measuring the adapter's KL from the base…", "done": "Done",
                  "cancelled": "Cancelled: no adapter was written",
                  "error": "Failed: " + str(event.get("error"))}
        self.phase.setText(labels.get(phase, phase))
        if phase == "train" and step is not None:
            for key, _ in PLOTS:
                if event.get(key) is not None:
                    self.history[key].append((int(step), float(event[key])))
                    xs, ys = zip(*self.history[key])
                    self.plots[key].setData(list(xs), list(ys))
            if event.get("reward_std") is not None and event.get("reward") is not None:
                self.history.setdefault("spread", []).append(
                    (int(step), event["reward"] - event["reward_std"], event["reward"] + event["reward_std"]))
                xs, low, high = zip(*self.history["spread"])
                self.spread[0].setData(list(xs), list(low))
                self.spread[1].setData(list(xs), list(high))
        if phase == "eval" and event.get("reward") is not None:
            self.history.setdefault("held_out", []).append((int(step or 0), float(event["reward"])))
            xs, ys = zip(*self.history["held_out"])
            self.held_out.setData(list(xs), list(ys))
            self.answers.setPlainText(f"Held-out answers at step {step or 0} (greedy), mean reward "
                                      f"{event['reward']:.3f}:\n\n" + _answers(event.get("samples") or []))
        if phase == "sample":
            self.answers.appendPlainText(_answers([event]))
        if phase == "done" and event.get("dry_run"):
            self.summary.setText(f"Scored by {event.get('reward')} in {event.get('seconds')} s; "
                                 "nothing was trained.")
        elif phase == "done":
            self.finished_adapter = event.get("adapter")
            self.summary.setText(_summary(event.get("metrics") or {}, event.get("drift") or {}))
        if phase == "error":
            self.summary.setText(f"<span style='color:#b00'>{event.get('error')}</span>")

    def _finished(self, code: int, _status) -> None:
        self._set_running(False)
        self.process = None
        phase = (self.last_line or {}).get("phase")
        if phase == "done" and self.trial:
            self.progress.setRange(0, 1)
            self.progress.setFormat("tried")
            self.phase.setText("Tried: answers and rewards below. Start trains with these rewards.")
        elif phase == "done" and self.finished_adapter:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("done")
            self.use_button.setVisible(self.current_kind() != "reward")
            self.refresh_adapters()
            self.adapter_ready.emit(self.finished_adapter)
        elif phase not in ("cancelled", "error"):
            self.phase.setText(f"The job ended unexpectedly (exit code {code}); no adapter was registered.")
            self.progress.setFormat("failed")
        else:
            self.progress.setFormat(phase)

    def _process_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._set_running(False)
            self.process = None
            self.phase.setText("The job could not be started.")

    # -- adapters ----------------------------------------------------------------------

    def refresh_adapters(self) -> None:
        infos = registry.list_adapters(self.data_dir)
        self.adapter_list.clear()
        self.reward_model.clear()
        self.reward_model.addItem("none (use the task's reward)", "")
        for info in infos:
            item = QListWidgetItem(registry.describe(info))
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            self.adapter_list.addItem(item)
            if info.kind == "reward":
                self.reward_model.addItem(info.name, info.name)
        self._adapter_picked()
        self.adapters_changed.emit()

    def _adapter_picked(self, *_) -> None:
        """Use, Rename and Delete act on the selected adapter: off while none is."""
        for button in (self.use_selected, self.rename_button, self.delete_button):
            button.setEnabled(self.adapter_list.currentItem() is not None)

    def _selected(self) -> str | None:
        item = self.adapter_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _use(self, name: str | None) -> None:
        if not name:
            return
        info = registry.resolve(name, self.data_dir)
        if info.gguf_path is None:
            QMessageBox.information(self, "Not a chat adapter",
                                    f"{name} is a reward model: use it as a GRPO job's reward.")
            return
        self.use_adapter.emit(str(info.gguf_path))

    def _rename(self) -> None:
        name = self._selected()
        if not name:
            return
        new, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=name)
        if ok and new.strip() and new.strip() != name:
            try:
                registry.rename(name, new.strip(), self.data_dir)
            except (registry.AdapterError, OSError) as exc:
                QMessageBox.warning(self, "Rename adapter", str(exc))
            self.refresh_adapters()

    def _delete(self) -> None:
        name = self._selected()
        if not name:
            return
        answer = QMessageBox.question(self, "Delete adapter",
                                      f"Delete the adapter {name} and its files?")
        if answer == QMessageBox.StandardButton.Yes:
            registry.delete(name, self.data_dir)
            self.refresh_adapters()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _summary(metrics: dict, drift: dict) -> str:
    """Before → after of each evaluation metric the job stored, and the KL it measured."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    rows = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            rows.append(f"{key}: {_num(b)} → <b>{_num(a)}</b>")
    took = metrics.get("seconds") or metrics.get("time_s")
    if took:
        rows.append(f"took {_duration(took)}")
    text = "Evaluation on held-out data — " + ("; ".join(rows) if rows else "no metrics")
    kls = [f"{DRIFT_SETS[name]} {d['kl']:.3g}" for name, d in drift.items()
           if name in DRIFT_SETS and isinstance(d, dict) and d.get("kl") is not None]
    if kls:
        text += "<br>KL from the base per token — " + "; ".join(kls)
    return text


def _answers(samples: list[dict]) -> str:
    """Answers with their rewards, as plain text."""
    lines = []
    for sample in samples:
        scores = sample.get("rewards") or {}
        detail = (" (" + ", ".join(f"{k} {_num(v)}" for k, v in scores.items()) + ")"
                  if len(scores) > 1 else "")
        lines.append(f"[{_num(sample.get('reward'))}{detail}] {sample.get('prompt', '')!s}\n"
                     f"    → {sample.get('answer', '')}")
    return "\n".join(lines)


def reward_functions(path: Path) -> list[str]:
    """The top-level functions a Python file defines, read without running it (the app never
    runs the user's reward code: the job does)."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]


def _num(value) -> str:
    return "–" if value is None else f"{value:.3g}"
