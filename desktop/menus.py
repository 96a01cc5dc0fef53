"""The main window's menus and its keyboard-shortcut list (a part of ``MainWindow``)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .queue_view import KEYS
from .vote_bar import CHOICES


class Menus:
    """File, Model, View and Help, for ``MainWindow``."""

    def _build_menus(self) -> None:
        """File, Model, View and Help: every action here also lives elsewhere in the window
        (the Data tab's buttons, the model picker, the dock's close button), so nothing that
        was closed or hidden is out of reach."""
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.new_action)
        file_menu.addSeparator()
        self.import_action = QAction("&Import votes…", self)
        self.import_action.setToolTip("Add the votes of a Diptych preference file")
        self.export_action = QAction("&Export votes…", self)
        self.export_action.setToolTip("Write the votes as TRL preference pairs (JSON lines)")
        if self.data_view is not None:  # the Data tab's own import and export
            self.import_action.triggered.connect(lambda: self._in_data_tab(self.data_view.import_file))
            self.export_action.triggered.connect(lambda: self._in_data_tab(self.data_view.export))
        else:
            self.import_action.setEnabled(False)
            self.export_action.setEnabled(False)
        file_menu.addAction(self.import_action)
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        model_menu = bar.addMenu("&Model")
        self.open_model_action = QAction("&Open GGUF…", self)
        self.open_model_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_model_action.triggered.connect(self.choose_model_file)
        self.open_adapter_action = QAction("Open &adapter file…", self)
        self.open_adapter_action.triggered.connect(self.choose_adapter_file)
        model_menu.addAction(self.open_model_action)
        model_menu.addAction(self.open_adapter_action)

        view_menu = bar.addMenu("&View")
        self.settings_action = self.settings_dock.toggleViewAction()
        self.settings_action.setText("&Settings (both panes)")
        view_menu.addAction(self.settings_action)
        self.raw_action = QAction("&Raw text (no Markdown)", self)
        self.raw_action.setCheckable(True)
        self.raw_action.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.raw_action.setToolTip("Show prompts and answers exactly as written, unformatted")
        view_menu.addAction(self.raw_action)

        help_menu = bar.addMenu("&Help")
        self.shortcuts_action = QAction("&Keyboard shortcuts", self)
        self.shortcuts_action.setShortcut(QKeySequence.StandardKey.HelpContents)
        self.shortcuts_action.triggered.connect(self.show_shortcuts)
        help_menu.addAction(self.shortcuts_action)

    def _in_data_tab(self, action) -> None:
        """Run one of the Data tab's actions where its result is reported."""
        self.tabs.setCurrentIndex(self.tabs.indexOf(self.data_view))
        action()

    def shortcuts(self) -> list[tuple[str, str]]:
        """The app's keyboard shortcuts, read from the actions that define them."""
        def keys(action: QAction) -> str:
            return action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)

        rows = [("Ctrl+Enter", "Send the prompt to both panes (in the prompt box)"),
                ("Esc", "Stop both panes")]
        rows += [(key, f"Vote: {label}") for _, label, key in CHOICES]
        rows.append(("1–4", "…also typed into the empty prompt box while a vote is open"))
        if self.queue_view is not None:
            rows += [(KEYS["write"], "Write a better answer (Queue tab)"),
                     (KEYS["skip"], "Skip the pair (Queue tab)"),
                     (KEYS["back"], "Back to the previous pair, its vote undone (Queue tab)"),
                     (KEYS["pause"], "Pause answering ahead (Queue tab)")]
        for action in (self.new_action, self.open_model_action, self.raw_action,
                       self.quit_action, self.shortcuts_action):
            if not action.shortcut().isEmpty():
                rows.append((keys(action), action.text().replace("&", "").rstrip("…")))
        if self.data_view is not None:
            rows.append(("Delete", "Delete the selected votes (Data tab)"))
        return rows

    def show_shortcuts(self) -> None:
        dialog = QDialog(self)
        dialog.setObjectName("shortcuts-dialog")
        dialog.setWindowTitle("Keyboard shortcuts")
        rows = self.shortcuts()
        table = QTableWidget(len(rows), 2, dialog)
        table.setObjectName("shortcuts-table")
        table.setHorizontalHeaderLabels(("Keys", "Does"))
        table.verticalHeader().hide()
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for row, (keys, text) in enumerate(rows):
            table.setItem(row, 0, QTableWidgetItem(keys))
            table.setItem(row, 1, QTableWidgetItem(text))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(table)
        layout.addWidget(buttons)
        dialog.resize(520, 420)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
