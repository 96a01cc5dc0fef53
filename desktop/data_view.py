"""The votes tab: every vote the user cast, filtered and searched, with delete and undo,
a look at the whole conversation, and preference-file export and import.

The view reads the Store through ``ops.run_query`` (off the UI thread, one query at a
time) and writes through ``ops.run_op``; it redraws when an operation changed the votes
(``Changes.votes``, announced on ``ops.hub()``). The widgets hold no SQL; ``refresh()``
re-reads everything from the Store.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSignalBlocker, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProxyStyle,
    QPushButton,
    QStyle,
    QStyleOptionHeader,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from diptych.training.preferences import ImportFormatError, export_jsonl, import_jsonl
from diptych.training.store import BASE, CHOICES, SIDES, Store, identity

from . import ops
from .conversation_html import CHOICE_NAMES, escaped, choice_text, conversation_html, local_time

ANY = ""  # a filter combo's "no filter" item
COLUMNS = ("Time", "Prompt", "Left", "Right", "Choice", "Blind", "Your answer")
PROMPT_COLUMN = COLUMNS.index("Prompt")
FILE_FILTER = "JSON lines (*.jsonl);;All files (*)"


class SortArrows(QProxyStyle):
    """A sorted column's arrow as readers take it: ▲ ascending, ▼ descending. (QHeaderView
    hands the style SortUp for a descending column, and Fusion draws SortUp as ▲.)"""

    FLIP = {QStyleOptionHeader.SortIndicator.SortUp: QStyleOptionHeader.SortIndicator.SortDown,
            QStyleOptionHeader.SortIndicator.SortDown: QStyleOptionHeader.SortIndicator.SortUp}

    def drawPrimitive(self, element, option, painter, widget=None):
        if (element == QStyle.PrimitiveElement.PE_IndicatorHeaderArrow
                and isinstance(option, QStyleOptionHeader)):
            option = QStyleOptionHeader(option)
            option.sortIndicator = self.FLIP.get(option.sortIndicator, option.sortIndicator)
        super().drawPrimitive(element, option, painter, widget)


def _tooltip(value: str) -> str:
    # Rich text, so Qt wraps a long prompt instead of drawing one screen-wide line.
    return f"<p>{escaped(value[:2000])}</p>" if value else ""


def _first_line(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    return lines[0] + (" …" if len(lines) > 1 else "")


def _response_label(response: dict) -> str:
    adapter = response.get("adapter_path") or "no adapter"
    return f"{response.get('model') or 'unknown model'} · {adapter}"


class DataView(QWidget):
    """The votes in a table, with filters, delete/undo, a conversation view, export/import."""

    def __init__(self, store: Store, parent=None, writer=None):
        super().__init__(parent)
        self.store = store  # read by queries, off the UI thread
        # Writes go through ``writer(fn)``, which runs ``fn(store)`` where the app's store
        # writes run (the session's store queue) and returns its result; it is called off
        # the UI thread, so a database another process holds never stalls the window.
        self.writer = writer or (lambda fn: fn(store))
        self._undo_ids: list[int] = []
        self._dialog: QDialog | None = None
        self.conversation_browser: QTextBrowser | None = None

        self.adapter_filter = QComboBox(objectName="adapter-filter")
        self.adapter_filter.setMinimumContentsLength(12)
        self.kind_filter = QComboBox(objectName="kind-filter")
        self.kind_filter.addItem("All kinds", ANY)
        for choice in CHOICES:
            self.kind_filter.addItem(CHOICE_NAMES[choice], choice)
        self.search = QLineEdit(objectName="search")
        self.search.setPlaceholderText("Search prompts, answers and your own answers…")
        self.search.setClearButtonEnabled(True)

        self.table = QTableWidget(0, len(COLUMNS), objectName="votes-table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)  # newest first
        header = self.table.horizontalHeader()
        self._arrows = SortArrows()  # the header does not own its style
        header.setStyle(self._arrows)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(PROMPT_COLUMN, QHeaderView.ResizeMode.Stretch)

        self.counts = QLabel(objectName="pair-counts")
        self.counts.setWordWrap(True)  # a long count line must not set the window's width
        self.counts.setToolTip("Left, right and your-answer votes are preference pairs (your "
                               "answer beats both shown answers, so it makes two). Ties and "
                               "both-bad votes are exported only when asked for.")
        self.open_button = QPushButton("Open conversation", objectName="open-conversation")
        self.delete_button = QPushButton("Delete vote", objectName="delete-vote")
        self.include_ties = QCheckBox("Include ties and both-bad", objectName="include-ties")
        self.export_button = QPushButton("Export…", objectName="export")
        self.export_button.setToolTip("Write the votes as TRL preference pairs (JSON lines)")
        self.import_button = QPushButton("Import…", objectName="import")
        self.import_button.setToolTip("Add the votes of a Diptych preference file")

        # One slim bar for what just happened; it offers Undo after a delete.
        self.message_bar = QFrame(objectName="message-bar")
        self.message_bar.setFrameShape(QFrame.Shape.StyledPanel)
        self.message = QLabel(objectName="message")
        self.message.setWordWrap(True)
        self.undo_button = QPushButton("Undo", objectName="undo")
        dismiss = QPushButton("✕")
        dismiss.setFlat(True)
        dismiss.setToolTip("Dismiss")
        bar = QHBoxLayout(self.message_bar)
        bar.setContentsMargins(8, 2, 2, 2)
        bar.addWidget(self.message, 1)
        bar.addWidget(self.undo_button)
        bar.addWidget(dismiss)
        self.message_bar.hide()

        filters = QHBoxLayout()
        filters.addWidget(QLabel("Adapter"))
        filters.addWidget(self.adapter_filter)
        filters.addWidget(QLabel("Kind"))
        filters.addWidget(self.kind_filter)
        filters.addWidget(self.search, 1)
        actions = QHBoxLayout()  # under the counts: beside them, a narrow window squeezes them
        actions.addWidget(self.open_button)
        actions.addWidget(self.delete_button)
        actions.addStretch(1)
        actions.addWidget(self.include_ties)
        actions.addWidget(self.export_button)
        actions.addWidget(self.import_button)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.message_bar)
        layout.addWidget(self.counts)
        layout.addLayout(actions)

        self.adapter_filter.currentIndexChanged.connect(self.refresh)
        self.kind_filter.currentIndexChanged.connect(self.refresh)
        self.search.textChanged.connect(self._search_changed)
        self.search.returnPressed.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(self.open_conversation)
        QShortcut(QKeySequence.StandardKey.Delete, self.table, activated=self.delete_selected,
                  context=Qt.ShortcutContext.WidgetShortcut)
        self.open_button.clicked.connect(self.open_conversation)
        self.delete_button.clicked.connect(self.delete_selected)
        self.undo_button.clicked.connect(self.undo_delete)
        dismiss.clicked.connect(self.message_bar.hide)
        self.export_button.clicked.connect(self.export)
        self.import_button.clicked.connect(self.import_file)
        ops.hub().changed.connect(self._on_changes)

        self.refresh()

    def _on_changes(self, changes, initiator) -> None:
        if changes.votes and initiator is not self:  # this view redraws after its own
            self.refresh()

    # -- reading ---------------------------------------------------------------------

    def refresh(self, *_, select: list[int] | None = None) -> None:
        """Re-read the store: the adapter list, the counts, and the rows the filters pass."""
        filters = {"adapter": self.adapter_filter.currentData() or None,
                   "choice": self.kind_filter.currentData() or None,
                   "text": self.search.text().strip() or None}
        store = self.store

        def read():
            everything = store.votes()
            rows = store.votes(**filters) if any(filters.values()) else everything
            return everything, rows, store.pair_counts()

        def show(result):
            everything, rows, counts = result
            self._fill_adapters(everything)
            self._fill_table(rows, self.selected_ids() if select is None else select)
            self._show_counts(len(rows), counts)

        ops.run_query(self, read, show)

    def selected_ids(self) -> list[int]:
        """The ids of the selected votes, top to bottom."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) for row in rows]

    @qdebounced(timeout=250)
    def _search_changed(self) -> None:
        self.refresh()

    def _fill_adapters(self, votes: list[dict]) -> None:
        """Every model identity that took part in a live vote, base first, then in order met."""
        names = {BASE: None}
        for vote in votes:
            names.update({identity(vote[side]): None for side in SIDES})
        current = self.adapter_filter.currentData()
        if current:
            names[current] = None  # never switch a filter off behind the user's back
        with QSignalBlocker(self.adapter_filter):
            self.adapter_filter.clear()
            self.adapter_filter.addItem("All adapters", ANY)
            for name in names:
                self.adapter_filter.addItem(name, name)
            index = self.adapter_filter.findData(current or ANY)
            self.adapter_filter.setCurrentIndex(max(0, index))

    def _fill_table(self, votes: list[dict], select: list[int]) -> None:
        table, wanted = self.table, set(select)
        selection = table.selectionModel()
        with QSignalBlocker(selection):
            table.setSortingEnabled(False)  # rows would move while they are filled
            table.clearSelection()
            table.setRowCount(len(votes))
            for row, vote in enumerate(reversed(votes)):
                for column, (text, tip) in enumerate(self._cells(vote)):
                    item = QTableWidgetItem(text)
                    item.setToolTip(tip)
                    table.setItem(row, column, item)
                table.item(row, 0).setData(Qt.ItemDataRole.UserRole, vote["id"])
            table.setSortingEnabled(True)
            flags = (QItemSelectionModel.SelectionFlag.Select
                     | QItemSelectionModel.SelectionFlag.Rows)
            for row in range(table.rowCount()):
                if table.item(row, 0).data(Qt.ItemDataRole.UserRole) in wanted:
                    selection.select(table.model().index(row, 0), flags)
        self._update_buttons()

    @staticmethod
    def _cells(vote: dict) -> list[tuple[str, str]]:
        """(text, tooltip) for each column of one vote."""
        names = {side: identity(vote[side]) for side in SIDES}
        prompt = vote["prompt"] or ""
        better = vote["better_text"] or ""
        return [
            (local_time(vote["created_at"]), vote["created_at"]),
            (_first_line(prompt), _tooltip(prompt)),
            (names["left"], _response_label(vote["left"])),
            (names["right"], _response_label(vote["right"])),
            (choice_text(vote["choice"], names), ""),
            ("yes" if vote["blind"] else "no", ""),
            ("yes" if better else "no", _tooltip(better)),
        ]

    def _show_counts(self, shown: int, counts: dict) -> None:
        if not counts["votes"]:
            self.counts.setText("No votes yet: vote on two answers in the Chat tab.")
            return
        kinds = ", ".join(f"{CHOICE_NAMES[c]} {counts[c]}" for c in ("left", "right", "better"))
        self.counts.setText(
            f"Showing {shown} of {counts['votes']} votes · {counts['pairs']} preference pairs "
            f"({kinds}; your answer makes 2) · not pairs: tie {counts['tie']}, "
            f"both bad {counts['both_bad']}")

    def _update_buttons(self) -> None:
        selected = len(self.table.selectionModel().selectedRows())
        self.open_button.setEnabled(selected == 1)
        self.delete_button.setEnabled(selected > 0)
        self.delete_button.setText("Delete votes" if selected > 1 else "Delete vote")

    # -- actions ---------------------------------------------------------------------

    def open_conversation(self, *_) -> None:
        """Show the selected vote's whole conversation in a window beside this one."""
        ids = self.selected_ids()
        if len(ids) != 1:
            return
        store = self.store

        def read():
            vote = store.vote_by_id(ids[0])
            return vote, store.conversation(vote["conversation_id"])

        ops.run_query(self, read, lambda result: self._show_conversation(*result))

    def _show_conversation(self, vote: dict, conversation: dict) -> None:
        if self._dialog is None:
            self._dialog = QDialog(self, objectName="conversation-dialog")
            self._dialog.resize(900, 700)
            self.conversation_browser = QTextBrowser(objectName="conversation")
            buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
            buttons.rejected.connect(self._dialog.close)
            layout = QVBoxLayout(self._dialog)
            layout.addWidget(self.conversation_browser)
            layout.addWidget(buttons)
        self._dialog.setWindowTitle(f"Conversation · {(vote['prompt'] or '').strip()[:60]}")
        self.conversation_browser.setHtml(conversation_html(conversation, vote["id"]))
        self._dialog.show()
        self._dialog.raise_()

    def delete_selected(self) -> None:
        """Soft-delete the selected votes; the message bar offers to undo it."""
        ids = self.selected_ids()
        if not ids:
            return

        def done(_):
            self._undo_ids = ids
            self._say(f"Deleted {len(ids)} vote{'s' if len(ids) > 1 else ''}.", undo=True)
            self.refresh()

        self._write(lambda store: _each(store, store.delete_vote, ids), done, "The votes were not deleted")

    def undo_delete(self) -> None:
        restored = self._undo_ids

        def done(_):
            self._undo_ids = []
            self.message_bar.hide()
            self.refresh(select=restored)

        self._write(lambda store: _each(store, store.restore_vote, restored), done,
                    "The votes were not restored")

    def _write(self, fn, done, title: str) -> None:
        """Run the store write ``fn(store)`` off the UI thread; say why when it fails."""
        self.delete_button.setEnabled(False)
        self.undo_button.setEnabled(False)

        def failed(exc):
            self._update_buttons()
            self.undo_button.setEnabled(True)
            QMessageBox.warning(self, title, ops.message(exc))

        def finished(result):
            self.undo_button.setEnabled(True)
            done(result)

        ops.run_op(self, partial(ops.write_votes, self.writer, fn), finished, failed)

    def export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export preference pairs", str(Path.home() / "diptych-preferences.jsonl"),
            FILE_FILTER)
        if not path:
            return
        store, ties = self.store, self.include_ties.isChecked()

        def failed(exc):
            if not isinstance(exc, OSError):
                ops.show_failure(self, exc, "Export failed")
                return
            QMessageBox.warning(self, "Export failed", f"Could not write {path}:\n{exc}")

        ops.run_query(self, lambda: export_jsonl(store, path, include_ties=ties),
                      lambda lines: self._say(f"Exported {lines} line{'s' if lines != 1 else ''} "
                                              f"to {path}."), failed)

    def import_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import preference pairs", "", FILE_FILTER)
        if not path:
            return
        name = Path(path).name
        self._say(f"Importing {name}…")
        self.import_button.setEnabled(False)

        def done(lines):
            self.import_button.setEnabled(True)
            already = "" if lines else " (the store already held all its votes)"
            self._say(f"Imported {lines} line{'s' if lines != 1 else ''} from {name}{already}.")
            self.refresh()

        def failed(exc):
            self.import_button.setEnabled(True)
            self.message_bar.hide()
            problem = str(exc) if isinstance(exc, (ImportFormatError, OSError)) else ops.message(exc)
            QMessageBox.warning(self, "Import failed", f"{name}: {problem}\n\nNothing was imported.")

        # checks the whole file before writing
        ops.run_op(self, partial(ops.write_votes, self.writer, lambda store: import_jsonl(store, path)),
                   done, failed)

    def _say(self, text: str, undo: bool = False) -> None:
        if not undo:
            self._undo_ids = []
        self.message.setText(text)
        self.undo_button.setVisible(undo)
        self.message_bar.show()


def _each(store: Store, action, ids: list[int]) -> None:
    """``action(id)`` for each id, in one transaction: all of them or none."""
    with store.transaction():
        for vote_id in ids:
            action(vote_id)
