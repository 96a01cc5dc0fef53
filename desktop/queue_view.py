"""The Queue tab: a prompt set both panes' contenders answer ahead of you, voted through
with the keys (1-4, W to write a better answer, S skip, Backspace back, P pause)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from diptych.models.conversation import SIDES
from diptych.training import tasks

from . import ops
from .chat_controller import ChatController
from .queue_controller import QueueController
from .vote_bar import LABELS, WRITE_ACTION, VoteBar

__all__ = ["KEYS", "SOURCES", "QueueView"]

SOURCES = [("A file of prompts", "file"),
           *((f"Task: {task.title}", f"task:{name}") for name, task in tasks.TASKS.items()),
           ("Your chat history (newest first)", "history"),
           ("The held-out prompts (then no longer held out)", "held-out")]
# The tab's own keys (1-4 are the window's: they vote in whichever tab is shown).
KEYS = {"skip": "S", "back": "Backspace", "pause": "P", "write": "W"}
ROLE_NAMES = {"system": "System", "user": "You", "assistant": "Answer"}


class QueueView(QWidget):
    def __init__(self, chat: ChatController, store, parent=None):
        super().__init__(parent)
        self.store = store  # the views' read connection
        self.controller = QueueController(chat, store, self)

        self.source = QComboBox(objectName="queue-source")
        for label, source in SOURCES:
            self.source.addItem(label, source)
        # A task's long title must not squeeze the path field away: the list is wider.
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(22)
        self.path = QLineEdit(objectName="queue-path")
        self.path.setPlaceholderText("prompts.txt (one a line), or .jsonl with a 'prompt' on each line")
        self.path.setMinimumWidth(200)
        self.browse = QPushButton("Browse…")
        self.count = QSpinBox(objectName="queue-count")
        self.count.setRange(1, 10_000)
        self.count.setValue(20)
        self.count.setToolTip("How many prompts to queue (a file's and the held-out prompts' "
                              "first, the history's newest, a task's drawn)")
        self.queue_button = QPushButton("Queue them", objectName="queue-create")
        self.queues = QComboBox(objectName="queue-list")
        self.queues.setToolTip("Every queue in the store, with how far you are in it")
        # a queue's name (its source, a file path) must not widen the window
        self.queues.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.queues.setMinimumContentsLength(24)
        source_row = QHBoxLayout()
        for widget in (QLabel("Prompt set"), self.source, self.path, self.browse):
            source_row.addWidget(widget)
        source_row.setStretchFactor(self.path, 1)
        count_row = QHBoxLayout()
        for widget in (QLabel("How many"), self.count, self.queue_button):
            count_row.addWidget(widget)
        count_row.addStretch(1)
        count_row.addWidget(QLabel("Open"))
        count_row.addWidget(self.queues)

        self.progress = QLabel(objectName="queue-progress")
        self.progress.setStyleSheet("font-weight: bold")
        self.ahead = QLabel(objectName="queue-ahead")
        self.ahead.setStyleSheet("color: gray")
        self.back_button = QPushButton(f"Back [{KEYS['back']}]", objectName="queue-back")
        self.back_button.setToolTip("The previous pair again, its vote undone: vote anew")
        self.skip_button = QPushButton(f"Skip [{KEYS['skip']}]", objectName="queue-skip")
        self.pause_button = QPushButton(f"Pause [{KEYS['pause']}]", objectName="queue-pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Stop answering ahead (the engines are the panes' alone); "
                                     "the pairs already answered can still be voted on")
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress)
        progress_row.addWidget(self.ahead, 1)
        for button in (self.back_button, self.skip_button, self.pause_button):
            progress_row.addWidget(button)

        self.prompt_view = QPlainTextEdit(objectName="queue-prompt")
        self.prompt_view.setReadOnly(True)
        self.prompt_view.setMaximumHeight(80)
        self.headers: dict[str, QLabel] = {}
        self.answer_views: dict[str, QPlainTextEdit] = {}
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for side in SIDES:
            column = QWidget()
            layout = QVBoxLayout(column)
            layout.setContentsMargins(0, 0, 0, 0)
            self.headers[side] = QLabel(objectName=f"queue-header-{side}")
            self.answer_views[side] = QPlainTextEdit(objectName=f"queue-answer-{side}")
            self.answer_views[side].setReadOnly(True)
            layout.addWidget(self.headers[side])
            layout.addWidget(self.answer_views[side], 1)
            splitter.addWidget(column)
        self.vote_bar = VoteBar()
        self.vote_bar.write_button.setText(f"{WRITE_ACTION}  [{KEYS['write']}]")
        self.status = QLabel(objectName="queue-status")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        layout = QVBoxLayout(self)
        layout.addLayout(source_row)
        layout.addLayout(count_row)
        layout.addLayout(progress_row)
        layout.addWidget(self.prompt_view)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.vote_bar)
        layout.addWidget(self.status)

        c = self.controller
        self.source.currentIndexChanged.connect(self._show_source)
        self.browse.clicked.connect(self._browse)
        self.queue_button.clicked.connect(self.create)
        self.queues.activated.connect(lambda i: c.open(self.queues.itemData(i)))
        self.back_button.clicked.connect(self.back)
        self.skip_button.clicked.connect(c.skip)
        self.pause_button.toggled.connect(c.set_paused)
        self.vote_bar.voted.connect(c.vote)
        self.vote_bar.better_written.connect(lambda text: c.vote("better", text))
        # Shortcuts of this tab only: Qt fires none of a hidden widget's.
        for key, action in ((KEYS["skip"], c.skip), (KEYS["back"], self.back),
                            (KEYS["pause"], self.pause_button.toggle),
                            (KEYS["write"], self._write)):
            QShortcut(QKeySequence(key), self, activated=action)
        c.changed.connect(self.redraw)
        c.opened.connect(self._on_opened)
        c.recorded.connect(self._on_recorded)
        c.write_failed.connect(self._on_write_failed)
        c.error.connect(self._show_error)
        chat = c.chat
        chat.busy_changed.connect(lambda _busy: self.redraw())
        ops.hub().changed.connect(self._on_changes)
        self._show_source()
        self.refresh_queues(open_latest=True)
        self.redraw()

    # -- actions -----------------------------------------------------------------------

    def create(self) -> None:
        source = self.source.currentData()
        if source == "file":
            source = self.path.text().strip()
            if not source:
                self.status.setText("Choose a file of prompts first (Browse…, or type its path).")
                return
        self.status.setText("Reading the prompts…")
        self.controller.create(source, self.count.value())

    def vote(self, choice: str) -> None:
        """A key 1-4 pressed while this tab is shown."""
        if self.vote_bar.voting:
            self.controller.vote(choice)

    def back(self) -> None:
        self.controller.back()
        item = self.controller.queue.current if self.controller.queue else None
        if item is not None:
            self.status.setText(f"Back to {item.position + 1}: its vote is undone, vote again")

    def _write(self) -> None:
        if self.vote_bar.voting:
            self.vote_bar.write_button.click()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A file of prompts", "",
                                              "Prompts (*.txt *.jsonl);;Any file (*)")
        if path:
            self.path.setText(path)

    def _show_source(self) -> None:
        is_file = self.source.currentData() == "file"
        self.path.setVisible(is_file)
        self.browse.setVisible(is_file)

    # -- what is shown -----------------------------------------------------------------

    def refresh_queues(self, open_latest: bool = False) -> None:
        """The list of queues; ``open_latest``: also open the newest one not finished."""
        def show(queues: list[dict]) -> None:
            self.queues.clear()
            open_id = self.controller.queue.id if self.controller.queue else None
            for q in queues:
                self.queues.addItem(f"{q['title']} · {q['n_decided']} of {q['n_items']} done",
                                    q["id"])
            unfinished = [q["id"] for q in queues if q["n_decided"] < q["n_items"]]
            if open_latest and open_id is None and unfinished:
                open_id = unfinished[0]
                self.controller.open(open_id)
            self.queues.setCurrentIndex(self.queues.findData(open_id))
            self.queues.setEnabled(bool(queues))

        ops.run_query(self, self.store.queues, show)

    def redraw(self) -> None:
        c = self.controller
        queue = c.queue
        item = queue.current if queue is not None else None
        self.back_button.setEnabled(queue is not None
                                    and any(i.decided for i in queue.items[:queue.position]))
        self.skip_button.setEnabled(item is not None)
        self.pause_button.setEnabled(queue is not None)
        if queue is None:
            self.progress.setText("No prompt set queued")
            self.ahead.setText("")
            self._show_pair(None)
            self.vote_bar.set_hint("Queue a prompt set above: both panes' contenders answer it "
                                   "ahead of you, and you vote with the keys 1–4.")
            return
        n = len(queue.items)
        self.progress.setText(f"{item.position + 1} of {n}" if item else f"All {n} done")
        ahead = [f"{queue.ready} pair{'s' * (queue.ready != 1)} ready"]
        if c.paused:
            ahead.append("paused")
        elif c.answering is not None:
            ahead.append(f"answering {c.answering.position + 1}")
        elif c.chat.busy:
            ahead.append("waiting for the panes to finish")
        self.ahead.setText(" · ".join(ahead))
        self._show_pair(item)
        if item is None:
            votes = sum(i.choice is not None for i in queue.items)
            self.vote_bar.set_hint(f"Every prompt of {queue.title} is decided: {votes} votes, "
                                   f"{n - votes} skipped. Back ({KEYS['back']}) to change one.")
        elif item.error:
            self.vote_bar.set_hint(f"Not answered: {item.error}. Skip it ({KEYS['skip']}).")
        elif not item.answered:
            self.vote_bar.set_hint("Paused: Pause again to answer it." if c.paused else
                                   "Answering… the pair shows here once both answers are in.")

    def _show_pair(self, item) -> None:
        self.prompt_view.setPlainText("" if item is None else prompt_text(item.prompt))
        for side in SIDES:
            text = item.texts[side] if item is not None and item.answered else ""
            if self.answer_views[side].toPlainText() != text:
                self.answer_views[side].setPlainText(text)
            name = "" if item is None or not item.answered else (
                "hidden until you vote (blind)" if item.blind else item.names[side])
            self.headers[side].setText(f"<b>{side.title()}</b>" + (f" · {name}" if name else ""))
        if item is not None and item.answered:
            self.vote_bar.show_voting(item.texts, prompt=item.prompt[-1]["content"])
        else:
            self.vote_bar.show_idle()

    def _on_opened(self) -> None:
        queue = self.controller.queue
        decided = sum(item.decided for item in queue.items)
        self.status.setText(f"{queue.title}: {len(queue.items)} prompts, {decided} decided")
        self.queues.setCurrentIndex(self.queues.findData(queue.id))

    def _on_recorded(self, item, choice: str) -> None:
        names = (f" (left: {item.names['left']}, right: {item.names['right']})"
                 if item.blind else "")
        self.status.setText(f"Recorded {item.position + 1}: <b>{LABELS[choice]}</b>{names} · "
                            f"Back ({KEYS['back']}) undoes it")

    def _on_write_failed(self, why: str) -> None:
        self.status.setText(f"<span style='color:#c62828'>Not recorded</span>: "
                            f"{html.escape(why)}. The pair is back: decide again.")

    def _show_error(self, title: str, exc: BaseException) -> None:
        self.status.setText("")
        ops.show_failure(self, exc, title)

    def _on_changes(self, changes, initiator) -> None:
        if changes.queue:
            self.refresh_queues()
        if changes.votes and initiator is not self.controller:
            self.controller.refresh()


def prompt_text(prompt: list[dict]) -> str:
    """A prompt as the person reads it: the user's words alone, or each message with who
    says it."""
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in prompt)
