"""The training panel: start a LoRA job on your votes, watch it learn, use the result.

A job is its own process, started with the same CLI a user would type
(``diptych train KIND … --progress jsonl``) through QProcess; the panel draws the JSON
lines it prints. A crash or a kill of the job never touches the app.

The form is built from the job kinds' descriptions (``diptych.training.kinds``): each
option with a label is a row, shown while a kind that has it is chosen, and sets the
same flag on the command line.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
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
from diptych.training import kinds as job_kinds
from diptych.training.tasks import TASKS

PLOTS = (("loss", "loss"), ("reward", "reward / margin"), ("kl", "KL from base"))
# Where each plot sits (row, column, rows, columns): the reward, what a GRPO user watches,
# gets a whole row, so no title is cut in a 1280-pixel window beside the settings dock.
PLOT_CELLS = {"loss": (0, 0, 1, 1), "kl": (0, 1, 1, 1), "reward": (1, 0, 1, 2)}
# Spin box ranges of numeric options: (lowest, highest, step, decimals); others get a wide range.
SPINS = {"steps": (0, 100_000, 1, 0), "lora_r": (0, 256, 1, 0), "lr": (0.0, 1.0, 1e-5, 6),
         "beta": (0.0, 10.0, 0.01, 3)}
SHORT_NAMES = {"dpo": "DPO", "kto": "KTO", "sft": "SFT", "reward": "Reward model", "grpo": "GRPO",
               "skill": "Skill"}
# What the libraries print on stderr that tells a user nothing: progress bars, the Trainer's
# log dicts (the plots show them), warnings and the source line each warning quotes.
NOISE = re.compile(r"(\d+%\|)|(it/s\]|s/it\]|examples/s\])|^\s*\{'|Warning\b|^\s*warnings\.warn\(|"
                   r"^\s*warn\(|^\s*$")


# The log's line for each stage of a job.
LOG_LINES = {"load": "Loading the base weights…", "eval_before": "Evaluating the base…",
             "eval_after": "Evaluating the adapter…", "save": "Saving the adapter…",
             "done": "Done.", "cancelled": "Cancelled: no adapter was written."}


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


def _number_widget(option: job_kinds.Option) -> QSpinBox | QDoubleSpinBox:
    is_int = option.type is not None and option.type.__name__ == "int"
    lo, hi, step, decimals = SPINS.get(option.field, (0, 1_000_000, 1, 0) if is_int else (0.0, 1e6, 0.1, 4))
    if is_int:
        return _optional_spin(QSpinBox(), int(lo), int(hi), int(step))
    return _optional_spin(QDoubleSpinBox(), lo, hi, step, decimals)


def _default_text(kind: job_kinds.Kind, field: str) -> str:
    """"default (5 epochs)": the value a job of ``kind`` takes when the field is left unset."""
    value = kind.default(field)
    if field == "steps" and value is None:
        epochs = kind.default("epochs")
        return f"default ({epochs:g} epochs)" if epochs else "default"
    if isinstance(value, float):
        return f"default ({value:g})"
    return "default" if value in (None, "", [], False) else f"default ({value})"


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
        self._stale_view = False  # the plots show the last job until the new one starts loading
        self._previous: dict | None = None  # the last job's view, back if the new one fails first
        self._eta: tuple[float, float] | None = None  # (ETA in s, when it was reported)
        self.kinds = job_kinds.kinds()

        # -- what to train -----------------------------------------------------------
        self.kind = QComboBox()
        for name, kind in self.kinds.items():
            self.kind.addItem(kind.title, name)
        self.name = QLineEdit()
        self.name.setObjectName("job-name")
        self.source = QComboBox()
        self.source.setObjectName("job-source")
        self.source_count = QLabel()
        self.source_count.setObjectName("job-source-count")
        self.source_count.setWordWrap(True)
        self.vote_counts = QLabel()  # what the votes give every kind
        self.vote_counts.setObjectName("vote-counts")
        self.vote_counts.setWordWrap(True)
        self.extra = QLineEdit()
        self.extra.setObjectName("job-extra")
        self.extra.setPlaceholderText("more options, e.g. --batch-size 2 --max-length 128")
        form = QFormLayout()
        form.addRow("Job", self.kind)
        form.addRow("Adapter name", self.name)
        form.addRow("Data", self.source)
        form.addRow("", self.source_count)  # under the picker: "… since v2 was made" needs the width
        self.form = form
        # one widget per labelled option (by Config field), shown for the kinds that have it
        self.fields: dict[str, QWidget] = {}
        self.field_rows: dict[str, QWidget] = {}
        self.field_options: dict[str, job_kinds.Option] = {}
        self._browse_buttons: dict[str, QPushButton] = {}
        for kind in self.kinds.values():
            for option in kind.all_options():
                if option.label and option.field not in self.fields:
                    self._add_field(option)
        form.addRow("Other options", self.extra)
        self.steps, self.lr, self.lora_r = (self.fields[f] for f in ("steps", "lr", "lora_r"))
        self.beta = self.fields.get("beta")
        self.reward_model = self.fields.get("reward_model")
        self.reward_fn = self.fields.get("reward_fn")
        self.reward_browse = self.field_rows.get("reward_fn") and self._browse_buttons.get("reward_fn")
        self.reward_row = self.field_rows.get("reward_fn")
        self.judge = self.fields.get("judge")
        if self.reward_fn is not None:
            self.reward_fn.setObjectName("job-reward-fn")
            self.reward_fn.setPlaceholderText("optional: FILE.py:FUNCTION, your reward")
            self.reward_browse.setToolTip("Choose a Python file with a reward function")
        if self.judge is not None:
            self.judge.setObjectName("job-judge")
            self.judge.setPlaceholderText("optional: a rubric, e.g. The answer is polite.")
            self.judge.setToolTip("The base model is asked whether each answer meets this rubric; "
                                  "its P(yes) is a reward")

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
        self.phase.setWordWrap(True)
        self.plots: dict[str, pg.PlotDataItem] = {}
        self.markers: list[tuple[str, pg.InfiniteLine]] = []  # where a skill job's GRPO starts
        self.plot_widgets: dict[str, pg.PlotWidget] = {}
        grid = QGridLayout()
        for key, title in PLOTS:
            widget = pg.PlotWidget(title=title)
            widget.setBackground("w")
            widget.setMinimumHeight(150)
            widget.setMaximumHeight(210)  # both rows and the log below fit a 800-pixel window
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
            self.plot_widgets[key] = widget
            grid.addWidget(widget, *PLOT_CELLS[key])
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

        # -- adapters ----------------------------------------------------------------
        self.adapter_list = QListWidget()
        self.adapter_list.setObjectName("adapter-list")
        self.use_selected = QPushButton("Use in tuned pane")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete")
        self.continue_button = QPushButton("Continue…")
        self.continue_button.setObjectName("adapter-continue")
        self.continue_button.setToolTip("Set up a job that continues the selected adapter on the "
                                        "votes cast since it was made")
        adapter_buttons = QHBoxLayout()
        for b in (self.use_selected, self.continue_button, self.rename_button, self.delete_button):
            adapter_buttons.addWidget(b)

        left = QVBoxLayout()
        left.addLayout(form)
        left.addWidget(self.vote_counts)
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
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self._use(self.finished_adapter))
        self.use_selected.clicked.connect(lambda: self._use(self._selected()))
        self.rename_button.clicked.connect(self._rename)
        self.delete_button.clicked.connect(self._delete)
        self.continue_button.clicked.connect(lambda: self.continue_from(self._selected()))
        self.adapter_list.currentItemChanged.connect(self._adapter_picked)
        self._kind_changed()
        self.refresh_adapters()

    # -- form --------------------------------------------------------------------------

    def _add_field(self, option: job_kinds.Option) -> None:
        """A form row for one option of the kinds' descriptions."""
        widget_kind = option.form_widget
        if widget_kind == "number":
            widget = _number_widget(option)
        elif widget_kind in ("choice", "adapter"):
            widget = QComboBox()
            if widget_kind == "choice":
                widget.addItem("default", None)
                for choice in option.choices or ():
                    widget.addItem(choice, choice)
            widget.currentIndexChanged.connect(self.refresh_counts)  # KTO's ties; --from's votes since
        elif widget_kind == "check":
            widget = QCheckBox()
            widget.toggled.connect(self.refresh_counts)  # e.g. SFT: also the chosen answers
        else:
            widget = QLineEdit()
        widget.setToolTip(option.help)
        widget.setObjectName(f"job-option-{option.field}")
        row: QWidget = widget
        if widget_kind == "file":
            browse = QPushButton("…")
            browse.clicked.connect(lambda _=False, o=option: self._browse_file(o))
            self._browse_buttons[option.field] = browse
            box = QHBoxLayout()
            box.setContentsMargins(0, 0, 0, 0)
            box.addWidget(widget, 1)
            box.addWidget(browse)
            row = QWidget()
            row.setLayout(box)
        self.fields[option.field] = widget
        self.field_rows[option.field] = row
        self.field_options[option.field] = option
        self.form.addRow(option.label, row)

    def current_kind(self) -> str:
        return self.kind.currentData()

    def _kind(self) -> job_kinds.Kind:
        return self.kinds[self.current_kind()]

    def _kind_changed(self, *_):
        kind = self._kind()
        self.kind.setToolTip(kind.title)  # whole, where the form's width cuts it
        self.name.setText(self._fresh_name())
        self.source.clear()
        if kind.data == "prompts":
            for key, task in TASKS.items():
                self.source.addItem(f"Task: {task.title}", f"task:{key}")
            self.source.addItem("Your chat history (prompts)", "history")
        else:
            self.source.addItem("Your votes", "store")
        self.source.addItem("A JSONL file…", "file")
        present = {o.field for o in kind.all_options() if o.label}
        for field, row in self.field_rows.items():
            self.form.setRowVisible(row, field in present)
            widget = self.fields[field]
            if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
                widget.setSpecialValueText(_default_text(kind, field))
            elif isinstance(widget, QComboBox) and self.field_options[field].form_widget == "choice":
                widget.setItemText(0, _default_text(kind, field))
        self._fill_adapter_pickers()
        self.try_button.setVisible(kind.dry_run is not None)
        self.answers.setVisible(kind.data == "prompts")
        self.refresh_counts()

    def _fresh_name(self) -> str:
        """kind-MMDD-HHMM, with -2, -3 … if an adapter already has that name."""
        base = f"{self.current_kind()}-{time.strftime('%m%d-%H%M')}"
        root = self.data_dir / "adapters"
        name, n = base, 1
        while (root / name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def refresh_counts(self) -> None:
        """What the votes give each kind, and how much data the chosen source holds."""
        kind = self._kind()
        data = self.source.currentData() or ""
        text = ""
        counts = self.store.pair_counts() if self.store is not None else None
        if counts is not None:
            parts = [f"{SHORT_NAMES.get(k.name, k.name)}: {job_kinds.describe_count(k, counts)}"
                     for k in self.kinds.values() if job_kinds.describe_count(k, counts)]
            self.vote_counts.setText("Your votes give " + " · ".join(parts))
        if counts is not None and data == "store":
            ties, chosen = self.fields.get("ties"), self.fields.get("chosen")
            parent, since = self._votes_since()
            text = job_kinds.describe_count(
                kind, self.store.pair_counts(since) if since else counts,
                ties=ties.currentData() if ties is not None else None,
                chosen=chosen.isChecked() if chosen is not None else None)
            if since:
                text += f" from the votes since {parent} was made"
            n = int(text.split()[0]) if text[:1].isdigit() else 0
            if n >= 5:
                text += f"; {max(1, round(n / 5))} held out to evaluate"
            elif n:
                text += "; too few to hold any out: evaluated on the training data"
        elif self.store is not None and data == "history":
            text = f"{len(self.store.recent_prompts(1000))} prompts"
        elif data.startswith("file:"):
            text = Path(data[5:]).name
        self.source_count.setText(text)

    def _votes_since(self) -> tuple[str | None, str | None]:
        """With "only votes since" ticked: the --from adapter and when it was made."""
        new_votes, picker = self.fields.get("new_votes"), self.fields.get("from_adapter")
        if (new_votes is None or picker is None or not new_votes.isChecked()
                or not self.form.isRowVisible(new_votes) or not picker.currentData()):
            return None, None
        info = next((i for i in getattr(self, "_infos", []) if i.name == picker.currentData()), None)
        return (info.name, info.created_at) if info is not None else (None, None)

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

    def _option_args(self, kind: job_kinds.Kind) -> list[str]:
        """The flags of the form rows the user set, for ``kind``."""
        args = []
        for option in kind.all_options():
            widget = self.fields.get(option.field) if option.label else None
            if widget is None:
                continue
            if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
                if widget.value() > widget.minimum():
                    args += [option.cli_flag, f"{widget.value():g}"]
            elif isinstance(widget, QComboBox):
                if widget.currentData():
                    args += [option.cli_flag, widget.currentData()]
            elif isinstance(widget, QCheckBox):
                if widget.isChecked():
                    args.append(option.cli_flag)
            elif widget.text().strip():
                args += [option.cli_flag, widget.text().strip()]
        return args

    def command(self, dry_run: bool = False) -> list[str]:
        """The exact ``diptych train`` command line this form describes (``--dry-run``:
        GRPO's Try it, which needs no name)."""
        kind = self._kind()
        args = [sys.executable, "-m", "diptych", "--data-dir", str(self.data_dir)]
        model = self.model_path() if callable(self.model_path) else self.model_path
        if model:
            args += ["--model", str(model)]
        args += ["train", kind.name, *(["--dry-run"] if dry_run else ["--name", self.name.text().strip()]),
                 "--progress", "jsonl"]
        data = self.source.currentData() or ""
        if data.startswith("file:"):
            args += ["--prompts-from" if kind.data == "prompts" else "--data", data[5:]]
        elif data.startswith("task:"):
            args += ["--task", data[5:]]
        elif data == "history":
            args += ["--prompts-from", "history"]
        return args + self._option_args(kind) + shlex.split(self.extra.text())

    # -- the job -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        if self.running:
            return
        name = self.name.text().strip()
        try:
            registry.check_name(name)
        except registry.AdapterError as exc:
            QMessageBox.warning(self, "Adapter name", str(exc))
            return
        if (self.data_dir / "adapters" / name).exists():
            QMessageBox.warning(self, "Adapter name", f"An adapter named {name} already exists: "
                                "choose another name for the new one.")
            return
        self._stale_view = True  # the last job's plots stay until this one starts loading
        self.use_button.setVisible(False)
        self.finished_adapter = None
        self._launch(self.command())

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
        """The curves and markers of ``history``; only the plots the job reports are shown
        (an SFT job has no reward, a reward model no KL)."""
        for key, _ in PLOTS:
            self.plots[key].setData(*_columns(self.history.get(key), 2))
        xs, low, high = _columns(self.history.get("spread"), 3)
        self.spread[0].setData(xs, low)
        self.spread[1].setData(xs, high)
        self.held_out.setData(*_columns(self.history.get("held_out"), 2))
        for key, marker in self.markers:
            self.plot_widgets[key].removeItem(marker)
        self.markers = []
        for step, text in self.history.get("markers", []):
            for key, widget in self.plot_widgets.items():
                marker = pg.InfiniteLine(step, angle=90, pen=pg.mkPen("#555", style=Qt.PenStyle.DashLine),
                                         label=text, labelOpts={"position": 0.9, "color": "#555"})
                widget.addItem(marker)
                self.markers.append((key, marker))
        self.plot_widgets["reward"].setVisible(bool(self.history.get("reward") or self.history.get("held_out")))
        self.plot_widgets["kl"].setVisible(bool(self.history.get("kl")))

    def try_rewards(self) -> None:
        """GRPO's dry run: a few answers of the model as it is, with their rewards."""
        if self.running:
            return
        self.answers.clear()
        self.summary.clear()
        self.use_button.setVisible(False)  # what it tries is not the last job's adapter
        self._launch(self.command(dry_run=True))
        self.phase.setText("Sampling and scoring a few answers…")

    def _launch(self, args: list[str]) -> None:
        self.trial = "--dry-run" in args
        self.log.clear()
        self.last_line = None
        self._eta = None
        self._stdout_buffer = b""
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

    def _browse_file(self, option: job_kinds.Option) -> None:
        """A file for a file option; a reward file also needs the function's name."""
        reward = option.field == "reward_fn"
        path, _ = QFileDialog.getOpenFileName(self, option.label or option.field, "",
                                              "Python (*.py)" if reward else "")
        if not path:
            return
        if not reward:
            self.fields[option.field].setText(path)
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
        self.fields[option.field].setText(f"{path}:{name}")

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
        self.progress.setFormat("step %v / %m" + (f" · ETA {_duration(left)}" if left else ""))

    def handle_line(self, line: str) -> None:
        """Draw one progress line of the job."""
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.log.appendPlainText(line)
            return
        self.last_line = event
        phase = event.get("phase", "")
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
                self.progress.setFormat("step %v / %m" + (f" · ETA {_duration(eta)}" if eta else ""))
                if eta and phase == "train":
                    self._eta = (float(eta), time.monotonic())
        labels = {"load": "Loading the base weights…", "eval_before": "Evaluating the base…",
                  "eval": "Training" if phase == "eval" and step else "Evaluating the base…",
                  "sample": "Sampling and scoring a few answers…",
                  "train": "Training", "eval_after": "Evaluating the adapter…",
                  "save": "Saving the adapter…",
                  "drift": "Measuring the adapter's KL from the base…", "done": "Done",
                  "cancelled": "Cancelled: no adapter was written",
                  "error": "Failed: " + str(event.get("error"))}
        if event.get("stage") == "warmup" and phase == "train":
            labels["train"] = "Warm-up: learning from the worked examples"
        elif event.get("stage") == "grpo":
            labels["train"] = labels["stage"] = "GRPO: sampling, scoring, reinforcing the better answers"
        self.phase.setText(labels.get(phase, phase))
        if phase == "stage" and step is not None:  # where a skill job's GRPO starts
            self.history.setdefault("markers", []).append((int(step), "GRPO"))
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
            self.summary.setText(_summary(event.get("metrics") or {}, event.get("drift") or {},
                                          event.get("data") or {}))
        if phase in ("stage", "train", "eval"):
            self._draw()
        if phase == "error":  # the last job's plots and evaluation stay: only this start failed
            self._restore_view()
            self.phase.setText(f"Failed: {event.get('error')}")

    def _log_event(self, event: dict) -> None:
        """A progress line, as a person would write it in the log."""
        phase = event.get("phase")
        if phase == "train" and event.get("loss") is not None:
            parts = [f"step {event.get('step')}/{event.get('total')}", f"loss {_num(event['loss'])}"]
            parts += [f"{label} {_num(event[key])}" for key, label in
                      (("reward", "reward/margin"), ("kl", "KL")) if event.get(key) is not None]
            if event.get("eta_s"):
                parts.append(f"ETA {_duration(event['eta_s'])}")
            self._append_log("  ".join(parts))
        elif phase == "error":
            self._append_log(f"error: {event.get('error')}")
        elif phase == "stage":
            self._append_log(f"Warm-up done at step {event.get('step')}: GRPO starts.")
        elif phase == "done" and event.get("path"):
            self._append_log(f"Done: the adapter is in {event['path']}")
        elif phase in LOG_LINES:
            self._append_log(LOG_LINES[phase])

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
            self.use_button.setVisible(self._kind().writes_gguf)
            self.refresh_adapters()
            self.name.setText(self._fresh_name())  # the next Start needs a name not yet taken
            self.adapter_ready.emit(self.finished_adapter)
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

    # -- adapters ----------------------------------------------------------------------

    def refresh_adapters(self) -> None:
        self.show_adapters(*read_adapters(self.data_dir))
        self.adapters_changed.emit()

    def show_adapters(self, infos: list, lines: list[str]) -> None:
        """List ``infos`` (as ``read_adapters`` read them), keeping the selected one."""
        selected = self._selected()
        self._infos = infos
        self.adapter_list.clear()
        for info, line in zip(infos, lines):
            item = QListWidgetItem(line)
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            self.adapter_list.addItem(item)
            if info.name == selected:
                self.adapter_list.setCurrentItem(item)
        self._fill_adapter_pickers()
        self._adapter_picked()

    def _fill_adapter_pickers(self) -> None:
        """The adapters each adapter option can name: a reward model's kind, or (to continue
        from) those of the chosen kind's sort: chat LoRAs, or reward models."""
        infos = getattr(self, "_infos", [])
        writes_gguf = self._kind().writes_gguf
        for field, option in self.field_options.items():
            if option.form_widget != "adapter":
                continue
            widget = self.fields[field]
            chosen = widget.currentData()
            widget.blockSignals(True)
            widget.clear()
            if option.adapter_kind == "reward":
                widget.addItem("none (use the task's reward)", "")
                names = [i.name for i in infos if i.kind == "reward"]
            else:
                widget.addItem("none (a new LoRA)", "")
                names = [i.name for i in infos if i.kind != "lora" and not i.problem
                         and (i.kind == "reward") != writes_gguf]
            for name in names:
                widget.addItem(name, name)
            widget.setCurrentIndex(max(0, widget.findData(chosen)) if chosen else 0)
            widget.blockSignals(False)

    def _adapter_picked(self, *_) -> None:
        """Use, Rename and Delete act on the selected adapter: off while none is."""
        for button in (self.use_selected, self.continue_button, self.rename_button, self.delete_button):
            button.setEnabled(self.adapter_list.currentItem() is not None)

    def continue_from(self, name: str | None) -> None:
        """Fill the form to continue ``name`` (its own kind where that trains on votes) on
        the votes cast since it was made; Start runs it."""
        if not name or self.running:
            return
        info = next((i for i in getattr(self, "_infos", []) if i.name == name), None)
        if info is not None and info.kind in self.kinds and self.kinds[info.kind].data != "prompts":
            self.kind.setCurrentIndex(self.kind.findData(info.kind))
        picker = self.fields["from_adapter"]
        picker.setCurrentIndex(max(0, picker.findData(name)))
        new_votes = self.fields.get("new_votes")
        if new_votes is not None and self.form.isRowVisible(new_votes):
            new_votes.setChecked(True)
        self.phase.setText(f"Continue {name}: Start trains it on the votes cast since it was made.")

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


def read_adapters(data_dir) -> tuple[list, list[str]]:
    """The registered adapters and their lines in the list (reads the disk)."""
    infos = registry.list_adapters(data_dir)
    return infos, [_describe(info, data_dir) for info in infos]


def _describe(info, data_dir) -> str:
    """An adapter's line, with the adapters it continues (v1 → v2 → v3)."""
    from diptych.training.lineage import lineage

    chain = lineage(info, data_dir)
    return registry.describe(info) + (f" · from {' → '.join(chain[:-1])}" if len(chain) > 1 else "")


def _columns(rows: list[tuple] | None, width: int) -> list[list]:
    """``rows`` of ``width`` values as that many columns (empty ones when there are none)."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def _summary(metrics: dict, drift: dict, data: dict | None = None) -> str:
    """Before → after of each evaluation metric the job stored, on which examples, and the
    KL it measured."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    warmup = metrics.get("warmup")  # a skill job: after its warm-up, before GRPO
    rows = []
    for key in sorted((set(before) | set(after)) - {"n"}):  # n: the examples, said below
        b, a = before.get(key), after.get(key)
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            middle = f"{_num(warmup.get(key))} → " if isinstance(warmup, dict) else ""
            rows.append(f"{key}: {_num(b)} → {middle}<b>{_num(a)}</b>")
    if isinstance(warmup, dict):
        rows.insert(0, "base → after the warm-up → after GRPO")
    took = metrics.get("seconds") or metrics.get("time_s")
    if took:
        rows.append(f"took {_duration(took)}")
    data = data or {}
    n = data.get("eval")
    plural = "" if n == 1 else "s"
    if n and data.get("held_out"):
        on = f"{n} held-out example{plural} (not trained on)"
    elif n:
        on = f"the {n} training example{plural} (too few to hold any out)"
    else:
        on = "held-out data"
    text = f"Evaluation on {on} — " + ("; ".join(rows) if rows else "no metrics")
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
