"""The adapter list of the Train tab: the registered adapters, with Use, Continue, Rename
and Delete.

The registry is read off the UI thread (``ops.run_query``) and re-read whenever an
operation changed the adapters (``Changes.adapters`` on ``ops.hub()``); Rename and Delete
are operations (``ops.rename_adapter``, ``ops.delete_adapter``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from diptych.models import adapters as registry

from . import ops


class AdapterList(QWidget):
    use_adapter = Signal(str)  # path of the GGUF LoRA the tuned pane should use
    continue_requested = Signal(str)  # name of the adapter a new job should continue
    adapters_read = Signal(list)  # the registered adapters, as just read

    def __init__(self, data_dir: Path, parent=None):
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self._infos: list = []
        self.adapter_list = QListWidget()
        self.adapter_list.setObjectName("adapter-list")
        self.use_selected = QPushButton("Use in tuned pane")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete")
        self.continue_button = QPushButton("Continue…")
        self.continue_button.setObjectName("adapter-continue")
        self.continue_button.setToolTip("Set up a job that continues the selected adapter on the "
                                        "votes cast since it was made")
        buttons = QHBoxLayout()
        for b in (self.use_selected, self.continue_button, self.rename_button, self.delete_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Adapters</b>"))
        layout.addWidget(self.adapter_list, 1)
        layout.addLayout(buttons)

        self.use_selected.clicked.connect(lambda: self.use(self.selected()))
        self.rename_button.clicked.connect(self._rename)
        self.delete_button.clicked.connect(self._delete)
        self.continue_button.clicked.connect(lambda: self.continue_requested.emit(self.selected() or ""))
        self.adapter_list.currentItemChanged.connect(self._adapter_picked)
        ops.hub().changed.connect(self._on_changes)
        self._adapter_picked()
        self.reload()

    def _on_changes(self, changes, initiator) -> None:
        if changes.adapters:
            self.reload()

    def reload(self) -> None:
        """Re-read the registry off the UI thread; then list what it holds."""
        root = self.data_dir
        ops.run_query(self, lambda: read_adapters(root), lambda read: self.show_adapters(*read))

    def show_adapters(self, infos: list, lines: list[str]) -> None:
        """List ``infos`` (as ``read_adapters`` read them), keeping the selected one."""
        selected = self.selected()
        self._infos = infos
        self.adapter_list.clear()
        for info, line in zip(infos, lines):
            item = QListWidgetItem(line)
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            self.adapter_list.addItem(item)
            if info.name == selected:
                self.adapter_list.setCurrentItem(item)
        self._adapter_picked()
        self.adapters_read.emit(infos)

    def _adapter_picked(self, *_) -> None:
        """Use, Rename and Delete act on the selected adapter: off while none is."""
        for button in (self.use_selected, self.continue_button, self.rename_button, self.delete_button):
            button.setEnabled(self.adapter_list.currentItem() is not None)

    def selected(self) -> str | None:
        item = self.adapter_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def use(self, name: str | None) -> None:
        """Run the adapter ``name`` (as listed) in the tuned pane."""
        info = next((i for i in self._infos if i.name == name), None) if name else None
        if info is None:
            return
        if info.gguf_path is None:
            QMessageBox.information(self, "Not a chat adapter",
                                    f"{name} is a reward model: use it as a GRPO job's reward.")
            return
        self.use_adapter.emit(str(info.gguf_path))

    def _rename(self) -> None:
        name = self.selected()
        if not name:
            return
        new, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=name)
        if ok and new.strip() and new.strip() != name:
            ops.run_op(self, partial(ops.rename_adapter, self.data_dir, name, new.strip()),
                       failure=lambda exc: (QMessageBox.warning(self, "Rename adapter", str(exc)),
                                            self.reload()))

    def _delete(self) -> None:
        name = self.selected()
        if not name:
            return
        answer = QMessageBox.question(self, "Delete adapter",
                                      f"Delete the adapter {name} and its files?")
        if answer == QMessageBox.StandardButton.Yes:
            ops.run_op(self, partial(ops.delete_adapter, self.data_dir, name),
                       title="Could not delete the adapter")


def read_adapters(data_dir) -> tuple[list, list[str]]:
    """The registered adapters and their lines in the list (reads the disk)."""
    infos = registry.list_adapters(data_dir)
    return infos, [_describe(info, data_dir) for info in infos]


def _describe(info, data_dir) -> str:
    """An adapter's line, with the adapters it continues (v1 → v2 → v3)."""
    from diptych.training.lineage import lineage

    chain = lineage(info, data_dir)
    return registry.describe(info) + (f" · from {' → '.join(chain[:-1])}" if len(chain) > 1 else "")
