"""The job form: what to train, on which data, with which options; its command line.

The form is built from the job kinds' descriptions (``diptych.training.kinds``): each
option with a label is a row, shown while a kind that has it is chosen, and sets the
same flag on the command line. What the votes give each kind is read off the UI thread
(``ops.run_query``) and re-read when the votes change.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from diptych.models import adapters as registry
from diptych.training import estimate
from diptych.training import kinds as job_kinds
from diptych.training.tasks import TASKS

from . import ops
from .form_fields import default_text, number_widget, reward_functions


class JobForm(QWidget):
    """The Train tab's left column, top: the job, its data, its options, its buttons."""

    kind_changed = Signal(object)  # the chosen job_kinds.Kind

    def __init__(self, data_dir: Path, store=None, model_path=None, parent=None):
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.store = store  # read by queries, off the UI thread
        self.model_path = model_path  # callable returning the model the app has loaded
        self.kinds = job_kinds.kinds()
        self._infos: list = []  # the registered adapters, as the adapter list read them
        self._counts_generation = 0  # drops counts a newer read has overtaken

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
        self.extra.editingFinished.connect(self.refresh_counts)
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


        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.vote_counts)
        layout.addLayout(buttons)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.source.activated.connect(self._source_picked)
        ops.hub().changed.connect(self._on_changes)
        self._kind_changed()

    def _on_changes(self, changes, initiator) -> None:
        if changes.votes:
            self.refresh_counts()

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.try_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.kind.setEnabled(not running)

    def _add_field(self, option: job_kinds.Option) -> None:
        """A form row for one option of the kinds' descriptions."""
        widget_kind = option.form_widget
        if widget_kind == "number":
            widget = number_widget(option)
            widget.editingFinished.connect(self.refresh_counts)  # steps, length: the estimate
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

    def selected_kind(self) -> job_kinds.Kind:
        """The kind of job the form is set to (its module's Kind)."""
        return self.kinds[self.current_kind()]

    def _kind_changed(self, *_):
        kind = self.selected_kind()
        self.kind.setToolTip(kind.title)  # whole, where the form's width cuts it
        self.name.setText(self.fresh_name())
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
                widget.setSpecialValueText(default_text(kind, field))
            elif isinstance(widget, QComboBox) and self.field_options[field].form_widget == "choice":
                widget.setItemText(0, default_text(kind, field))
        self._fill_adapter_pickers()
        self.try_button.setVisible(kind.dry_run is not None)
        self.kind_changed.emit(kind)
        self.refresh_counts()

    def fresh_name(self) -> str:
        """kind-MMDD-HHMM, with -2, -3 … if an adapter already has that name."""
        base = f"{self.current_kind()}-{time.strftime('%m%d-%H%M')}"
        root = self.data_dir / "adapters"
        name, n = base, 1
        while (root / name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def refresh_counts(self) -> None:
        """What the votes give each kind, and how much data the chosen source holds (read
        off the UI thread; shown when read)."""
        kind = self.selected_kind()
        data = self.source.currentData() or ""
        if data.startswith("file:"):
            self.source_count.setText(Path(data[5:]).name)
        elif data not in ("store", "history"):
            self.source_count.setText("")
        if self.store is None:
            if data in ("store", "history"):
                self.source_count.setText("")
            return
        ties, chosen = self.fields.get("ties"), self.fields.get("chosen")
        ties = ties.currentData() if ties is not None else None
        chosen = chosen.isChecked() if chosen is not None else None
        parent, since = self._votes_since()
        store = self.store
        self._counts_generation += 1
        generation = self._counts_generation

        def read():
            counts = store.pair_counts()
            return {"counts": counts,
                    "since": store.pair_counts(since) if data == "store" and since else counts,
                    "tokens": store.mean_answer_tokens(since) if data == "store" else None,
                    "prompts": len(store.recent_prompts(1000)) if data == "history" else None}

        def show(read):
            if generation != self._counts_generation:
                return
            counts = read["counts"]
            by_count: dict[str, list[str]] = {}  # kinds that take the same data share a line
            for k in self.kinds.values():
                if described := job_kinds.describe_count(k, counts):
                    by_count.setdefault(described, []).append(k.short)
            self.vote_counts.setText("Your votes give " + " · ".join(
                f"{', '.join(shorts)}: {described}" for described, shorts in by_count.items()))
            if data == "store":
                self.source_count.setText(_held_out(
                    job_kinds.describe_count(kind, read["since"], ties=ties, chosen=chosen)
                    + (f" from the votes since {parent} was made" if since else ""))
                    + self._estimate(kind, read["since"], read["tokens"], ties, chosen))
            elif data == "history":
                self.source_count.setText(f"{read['prompts']} prompts")

        ops.run_query(self, read, show)

    def _estimate(self, kind, counts: dict, mean_tokens: float, ties, chosen) -> str:
        """How long the job the form describes would take on these votes (the Config the
        form's flags and other options give, as the job would parse them)."""
        if kind.reinforces or kind.data not in estimate.PACES:
            return ""
        parser = argparse.ArgumentParser(add_help=False)
        job_kinds.add_arguments(parser, kind)
        try:
            values, _ = parser.parse_known_args(self._option_args(kind) + shlex.split(self.extra.text()))
            cfg = job_kinds.config_from(kind, vars(values))
        except (SystemExit, ValueError, TypeError):  # the job will say what is wrong
            return ""
        found = job_kinds.example_counts(counts, tie=ties or kind.default("ties") or "skip",
                                         chosen=bool(kind.default("chosen") if chosen is None else chosen))
        seconds = estimate.job_seconds(kind.data, found[kind.data]["n"], mean_tokens,
                                       max_length=cfg.max_length, epochs=cfg.epochs,
                                       steps=cfg.steps, batch_size=cfg.batch_size, drift=cfg.drift)
        if seconds is None:
            return ""
        return (f". The job takes {estimate.describe(seconds)} (answers of {mean_tokens:.0f} "
                f"tokens, cut at {cfg.max_length})")

    def _votes_since(self) -> tuple[str | None, str | None]:
        """With "only votes since" ticked: the --from adapter and when it was made."""
        new_votes, picker = self.fields.get("new_votes"), self.fields.get("from_adapter")
        if (new_votes is None or picker is None or not new_votes.isChecked()
                or not self.form.isRowVisible(new_votes) or not picker.currentData()):
            return None, None
        info = next((i for i in self._infos if i.name == picker.currentData()), None)
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
        kind = self.selected_kind()
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


    def checked_name(self) -> str | None:
        """The adapter name to start a job with, or None (the user told why)."""
        name = self.name.text().strip()
        try:
            registry.check_name(name)
        except registry.AdapterError as exc:
            QMessageBox.warning(self, "Adapter name", str(exc))
            return None
        if (self.data_dir / "adapters" / name).exists():
            QMessageBox.warning(self, "Adapter name", f"An adapter named {name} already exists: "
                                "choose another name for the new one.")
            return None
        return name

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

    # -- the adapters the options can name ---------------------------------------------

    def set_adapters(self, infos: list) -> None:
        self._infos = infos
        self._fill_adapter_pickers()

    def _fill_adapter_pickers(self) -> None:
        """The adapters each adapter option can name: a reward model's kind, or (to continue
        from) those of the chosen kind's sort: chat LoRAs, or reward models."""
        infos = self._infos
        writes_gguf = self.selected_kind().writes_gguf
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

    def continue_from(self, name: str | None) -> None:
        """Fill the form to continue ``name`` (its own kind where that trains on votes) on
        the votes cast since it was made; Start runs it."""
        if not name:
            return
        info = next((i for i in self._infos if i.name == name), None)
        if info is not None and info.kind in self.kinds and self.kinds[info.kind].data != "prompts":
            self.kind.setCurrentIndex(self.kind.findData(info.kind))
        picker = self.fields["from_adapter"]
        picker.setCurrentIndex(max(0, picker.findData(name)))
        new_votes = self.fields.get("new_votes")
        if new_votes is not None and self.form.isRowVisible(new_votes):
            new_votes.setChecked(True)
        self.refresh_counts()


def _held_out(text: str) -> str:
    """A count of examples, and how many of them are held out to evaluate."""
    n = int(text.split()[0]) if text[:1].isdigit() else 0
    if n >= 5:
        return text + f"; {max(1, round(n / 5))} held out to evaluate"
    if n:
        return text + "; too few to hold any out: evaluated on the training data"
    return text
