"""The training panel: start a LoRA job on your votes, watch it learn, use the result.

Three parts, wired here: the job form (``job_form``: what to train and its command line),
the job monitor (``job_monitor``: the job's process, drawn as it runs) and the adapter
list (``adapter_list``). A finished job is announced as an operation
(``ops.job_finished``), so every view that lists adapters re-reads them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from . import ops
from .adapter_list import AdapterList, read_adapters
from .job_form import JobForm, reward_functions
from .job_monitor import NOISE, PLOTS, JobMonitor

__all__ = ["NOISE", "PLOTS", "TrainingPanel", "read_adapters", "reward_functions"]


class TrainingPanel(QWidget):
    adapter_ready = Signal(str)  # name of a finished adapter
    use_adapter = Signal(str)  # path of the GGUF LoRA the tuned pane should use

    def __init__(self, data_dir: Path, store=None, model_path=None, parent=None):
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.job_form = JobForm(data_dir, store, model_path)
        self.monitor = JobMonitor()
        self.adapters = AdapterList(data_dir)

        left = QVBoxLayout()
        left.addWidget(self.job_form)
        left.addWidget(self.adapters, 1)
        left_box = QWidget()
        left_box.setLayout(left)
        left_box.setMaximumWidth(460)
        layout = QHBoxLayout(self)
        layout.addWidget(left_box)
        layout.addWidget(self.monitor, 1)

        form, monitor = self.job_form, self.monitor
        form.start_button.clicked.connect(self.start)
        form.try_button.clicked.connect(self.try_rewards)
        form.cancel_button.clicked.connect(monitor.cancel)
        form.kind_changed.connect(lambda kind: monitor.answers.setVisible(kind.reinforces))
        monitor.answers.setVisible(form.selected_kind().reinforces)
        monitor.running_changed.connect(form.set_running)
        monitor.finished.connect(self._job_finished)
        monitor.use_button.clicked.connect(lambda: self.adapters.use(monitor.finished_adapter))
        self.adapters.use_adapter.connect(self.use_adapter)
        self.adapters.adapters_read.connect(form.set_adapters)
        self.adapters.continue_requested.connect(self.continue_from)

    def __getattr__(self, name: str):
        """The parts' widgets and state, as the panel's own (``panel.log``, ``panel.kind``)."""
        for part in ("job_form", "monitor", "adapters"):
            widget = self.__dict__.get(part)
            if widget is not None and hasattr(widget, name):
                return getattr(widget, name)
        raise AttributeError(name)

    @property
    def running(self) -> bool:
        return self.monitor.running

    def refresh_adapters(self) -> None:
        """Re-read the adapters (off the UI thread)."""
        self.adapters.reload()

    def start(self) -> None:
        if self.running:
            return
        if self.job_form.checked_name() is not None:
            self.monitor.start_job(self.job_form.command(), self.job_form.selected_kind().writes_gguf)

    def try_rewards(self) -> None:
        if not self.running:
            self.monitor.try_rewards(self.job_form.command(dry_run=True))

    def continue_from(self, name: str | None) -> None:
        if name and not self.running:
            self.job_form.continue_from(name)
            self.monitor.phase.setText(
                f"Continue {name}: Start trains it on the votes cast since it was made.")

    def _job_finished(self, name: str) -> None:
        self.job_form.name.setText(self.job_form.fresh_name())  # the next Start needs a new name
        ops.run_op(self, ops.job_finished)
        self.adapter_ready.emit(name)
