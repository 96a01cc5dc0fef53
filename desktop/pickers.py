"""The main window's pickers: the model, and each pane's contender (a part of ``MainWindow``).

The registry is read off the UI thread (``ops.run_query``); the pickers are refilled when
an operation changed the adapters or the contenders (``MainWindow._on_changes``).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QToolBar
from superqt.utils import qdebounced

from diptych.models import adapters as adapter_registry
from diptych.models import catalog
from diptych.models.conversation import SIDES
from diptych.models.session import Contender

from . import ops

OPEN_FILE = "__open__"
NO_ADAPTER = ""
BLIND_PICKER_TIP = ("Blind: which pane runs which contender is hidden until you vote; "
                    "the choice is kept")


class Pickers:
    """The toolbar's model and contender pickers, for ``MainWindow``."""

    def _build_pickers(self, toolbar: QToolBar) -> None:
        # The toolbar must fit a 1024-pixel window: each picker shows the start of its
        # text (the tooltip and the popup have it whole).
        self.model_picker = QComboBox()
        self.model_picker.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_picker.setMinimumContentsLength(16)
        # Each pane runs a contender: the base, or the base plus any adapter. The pickers
        # name adapters by their stable id, so a rename or delete is followed.
        self.pickers = {side: QComboBox(objectName=f"{side}-contender") for side in SIDES}
        self.adapter_picker = self.pickers["right"]  # the tuned pane's, by default
        toolbar.addWidget(QLabel(" Model "))
        toolbar.addWidget(self.model_picker)
        for side in SIDES:
            picker = self.pickers[side]
            picker.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            picker.setMinimumContentsLength(22)
            picker.setPlaceholderText("hidden until you vote")
            toolbar.addWidget(QLabel(f"  {side.title()} pane "))
            toolbar.addWidget(picker)
    def use_adapter(self, path: str | Path | None, side: str = "right") -> None:
        """Run the GGUF LoRA ``path`` (None: the base alone) in ``side``'s pane (the slot
        that shows there: in a blind conversation, maybe the other one)."""
        self.controller.set_adapter(Path(path) if path else None,
                                    slot=self.controller.session.shown[side])

    @qdebounced(timeout=300)  # a job's folder comes and goes in a few quick steps
    def _adapters_folder_changed(self, *_) -> None:
        """A job run from a shell, or a rename or delete there: every view re-reads."""
        ops.run_op(self, ops.adapters_folder_changed)

    def _use_trained_adapter(self, path: str) -> None:
        self.use_adapter(path)
        self.tabs.setCurrentIndex(0)

    def refresh_adapters(self, infos: list | None = None) -> None:
        """List registered adapters (kind, date, key metric) in both pickers and select
        each pane's. A pane follows its adapter by stable id: to its new name after a
        rename; back to the base, with a word, after a delete. (Ids are hashes: only an
        adapter whose file has gone is looked for by id, so a refresh hashes nothing new.)
        ``infos``: the registry as read off the UI thread (default: read it, then this)."""
        if infos is None:
            self.reload_adapters()
            return
        runnable = [info for info in infos if info.gguf_path is not None]  # not reward models
        session = self.controller.session
        for slot, current in list(session.contenders.items()):
            if current.adapter is not None and session.engines and not current.adapter.exists():
                info = next((i for i in runnable
                             if adapter_registry.stable_id(i) == current.adapter_id), None)
                if info is not None:  # renamed: the engine keeps the LoRA it has loaded
                    session.contenders[slot] = Contender(info.gguf_path, current.adapter_id,
                                                         info.name, current.scale)
                    self._update_headers()
                else:  # deleted
                    self.statusBar().showMessage(f"The adapter {current.name} was deleted: its "
                                                 "pane shows the base again.", 15_000)
                    self.controller.set_adapter(None, slot=slot)
        self._runnable = runnable
        self._fill_pickers()

    def reload_adapters(self, *_) -> None:
        """Re-read the adapters folder off the UI thread; then the pickers show what it holds."""
        root, contenders = self.data_dir, list(self.controller.session.contenders.values())

        def read():
            infos = adapter_registry.list_adapters(root)
            if any(c.adapter is not None and not c.adapter.exists() for c in contenders):
                for info in infos:  # renamed? refresh_adapters looks for it by hash: cache them
                    adapter_registry.stable_id(info)
            return infos

        ops.run_query(self, read, self.refresh_adapters, lambda exc: self.statusBar().showMessage(
            f"The adapters folder could not be read: {ops.message(exc)}", 15_000))

    def _fill_pickers(self) -> None:
        """Each pane's picker names the contender shown in that pane; in a blind
        conversation it says "hidden" until the vote (the choices stay behind it)."""
        session, hidden = self.controller.session, self.controller.session.hidden
        for side, picker in self.pickers.items():
            current = session.contender(side)
            picker.blockSignals(True)
            picker.clear()
            picker.addItem("Base (no adapter)", NO_ADAPTER)
            for info in self._runnable:
                picker.addItem(adapter_registry.describe(info), str(info.gguf_path))
                picker.setItemData(picker.count() - 1, str(info.gguf_path),
                                   Qt.ItemDataRole.ToolTipRole)
            picker.addItem("Open adapter file…", OPEN_FILE)
            index = picker.findData(str(current.adapter)) if current.adapter is not None else 0
            if current.adapter is not None and index < 0:  # a file outside the registry
                picker.insertItem(1, current.adapter.name, str(current.adapter))
                index = 1
            picker.setCurrentIndex(-1 if hidden else index)  # -1 shows the placeholder
            picker.setToolTip(BLIND_PICKER_TIP if hidden else picker.currentText())
            picker.blockSignals(False)
        self._update_buttons()

    def choose_model_file(self) -> None:
        """Model → Open GGUF… (and the picker's last item): ask for a file, open it."""
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "",
                                              "GGUF models (*.gguf);;All files (*)")
        if not path:
            self._select_model_item(self.model_path)
        elif Path(path) != self.model_path:
            self.open_model(path)

    def choose_adapter_file(self, side: str = "right") -> None:
        """Model → Open adapter file… (and the adapter pickers' last item)."""
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF LoRA adapter", "",
                                              "GGUF LoRA (*.gguf);;All files (*)")
        if path:
            self.use_adapter(path, side)
        else:
            self._fill_pickers()

    def _on_model_picked(self, index: int) -> None:
        data = self.model_picker.itemData(index)
        if data == OPEN_FILE:
            self.choose_model_file()
        elif data and Path(data) != self.model_path:
            self.open_model(data)

    def _on_adapter_picked(self, index: int, side: str = "right") -> None:
        data = self.pickers[side].itemData(index)
        if data == OPEN_FILE:
            self.choose_adapter_file(side)
        else:
            self.use_adapter(data or None, side)

    # -- model picker ------------------------------------------------------------------

    def _fill_model_picker(self) -> None:
        self.model_picker.clear()
        self.model_picker.addItem(catalog.BUNDLED_NAME, str(catalog.bundled_model_path()))
        self.model_picker.addItem("Open GGUF…", OPEN_FILE)

    def _remember_model(self, path: Path) -> None:
        if self.model_picker.findData(str(path)) < 0:
            self.model_picker.insertItem(self.model_picker.count() - 1, path.name, str(path))
        self._select_model_item(path)

    def _select_model_item(self, path: Path | None) -> None:
        index = self.model_picker.findData(str(path)) if path else 0
        self.model_picker.setCurrentIndex(max(index, 0))
        self.model_picker.setToolTip(self.model_picker.currentText())
