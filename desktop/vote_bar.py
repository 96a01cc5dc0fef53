"""The vote bar under the panes: which answer is better, recorded with one click."""

from __future__ import annotations

import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

CHOICES = (
    ("left", "Left is better", "1"),
    ("right", "Right is better", "2"),
    ("tie", "Tie", "3"),
    ("both_bad", "Both are bad", "4"),
)
# The user's own answer has one name in the app: the action is "Write a better answer…",
# the vote it records is "your answer".
WRITE_ACTION = "Write a better answer…"
LABELS = {key: label for key, label, _ in CHOICES} | {"better": "Your answer"}
VOTE_HINT = "Which is better?"


class VoteBar(QWidget):
    voted = Signal(str)  # choice
    better_written = Signal(str)  # the user's own answer
    undo_requested = Signal()
    retry_requested = Signal()  # record the vote the store could not take

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prompt_label = QElidingLabel(VOTE_HINT)
        # The buttons set the bar's width, never a message: a narrow window elides it
        # (its tooltip has it whole).
        self.prompt_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.prompt_label)
        for key, label, shortcut in CHOICES:
            button = QPushButton(f"{label}  [{shortcut}]")
            button.setObjectName(f"vote-{key}")
            button.clicked.connect(lambda _=False, k=key: self.voted.emit(k))
            self.buttons[key] = button
            row.addWidget(button)
        self.write_button = QPushButton(WRITE_ACTION)
        self.write_button.setToolTip("Edit either answer or write your own: your answer is "
                                     "stored as chosen, both shown answers as rejected")
        self.write_button.setObjectName("vote-better")
        row.addWidget(self.write_button)
        self.recorded = QLabel()
        self.recorded.setObjectName("vote-recorded")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setObjectName("vote-undo")
        self.undo_button.clicked.connect(self.undo_requested.emit)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setObjectName("vote-retry")
        self.retry_button.setToolTip("Record the vote again (nothing was written)")
        self.retry_button.clicked.connect(self.retry_requested.emit)
        # A long reason must not widen the window: it wraps, the tooltip has it whole.
        self.recorded.setWordWrap(True)
        self.recorded.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row.addWidget(self.recorded, 1)
        row.addWidget(self.retry_button)
        row.addWidget(self.undo_button)
        self.answers: dict[str, str] = {}
        self.prompt = ""  # the prompt both answers answer
        self.write_button.clicked.connect(self._write_better)
        self.show_idle()

    def show_idle(self) -> None:
        """Nothing to vote on yet (an answer is missing or still streaming)."""
        self._set(voting=False, recorded=None)
        self.set_hint("Vote once both answers are in.")

    def show_voting(self, answers: dict[str, str], prompt: str = "") -> None:
        self.answers = answers
        self.prompt = prompt
        self._set(voting=True, recorded=None)
        self.set_hint(VOTE_HINT)

    def set_hint(self, text: str) -> None:
        """The words before the buttons (elided where the window is narrow)."""
        self.prompt_label.setText(text)
        self.prompt_label.setToolTip(text)

    def show_saving(self, choice: str) -> None:
        """Sent to the store, not yet committed: no "Recorded" until it is."""
        self._set(voting=False, recorded=f"Saving: <b>{LABELS[choice]}</b>…", undo=False)

    def show_recorded(self, choice: str, votes: int | None = None) -> None:
        """Committed. ``votes``: how many votes count now (this one included)."""
        total = f" · {votes} vote{'s' if votes != 1 else ''} in all" if votes else ""
        self._set(voting=False, recorded=f"Recorded: <b>{LABELS[choice]}</b>{total}")

    def show_failed(self, choice: str, why: str) -> None:
        """The store did not take the vote: say so, keep it, offer to try again."""
        self._set(voting=False, undo=False, retry=True,
                  recorded=f"<span style='color:#c62828'>Not recorded: <b>{LABELS[choice]}"
                           f"</b></span> — {html.escape(why)}. It is kept: Retry, or it is "
                           "written with the next answer.")
        self.recorded.setToolTip(why)

    def _set(self, voting: bool, recorded: str | None, undo: bool = True,
             retry: bool = False) -> None:
        for button in (*self.buttons.values(), self.write_button):
            button.setVisible(recorded is None)
            button.setEnabled(voting)
        self.prompt_label.setVisible(recorded is None)
        self.recorded.setVisible(recorded is not None)
        self.recorded.setText(recorded or "")
        self.recorded.setToolTip("")
        self.undo_button.setVisible(recorded is not None and undo)
        self.retry_button.setVisible(retry)

    @property
    def voting(self) -> bool:
        return self.buttons["left"].isEnabled() and self.buttons["left"].isVisible()

    def _write_better(self) -> None:
        dialog = BetterAnswerDialog(self.answers, self.prompt, self)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.text().strip():
            self.better_written.emit(dialog.text().strip())


class BetterAnswerDialog(QDialog):
    """Edit either answer, or write one from scratch, under the prompt it answers; it is
    stored as the chosen answer."""

    def __init__(self, answers: dict[str, str], prompt: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("better-answer-dialog")
        self.setWindowTitle(WRITE_ACTION.rstrip("…"))
        self.resize(640, 480)
        self.prompt_view = QPlainTextEdit(prompt)  # plain text: shown exactly as sent
        self.prompt_view.setObjectName("better-answer-prompt")
        self.prompt_view.setReadOnly(True)
        self.prompt_view.setMaximumHeight(90)
        self.start_from = QComboBox()
        self.start_from.addItem("Start from the left answer", answers.get("left", ""))
        self.start_from.addItem("Start from the right answer", answers.get("right", ""))
        self.start_from.addItem("Start from scratch", "")
        self.editor = QPlainTextEdit(answers.get("left", ""))
        self.start_from.currentIndexChanged.connect(
            lambda i: self.editor.setPlainText(self.start_from.itemData(i))
        )
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>The prompt</b>"))
        layout.addWidget(self.prompt_view)
        layout.addWidget(QLabel("<b>Your answer</b> — stored as chosen; both shown answers "
                                "as rejected."))
        layout.addWidget(self.start_from)
        layout.addWidget(self.editor, 1)
        layout.addWidget(buttons)

    def text(self) -> str:
        return self.editor.toPlainText()
