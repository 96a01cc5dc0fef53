"""The prompt box: Ctrl+Enter sends; the keys 1-4 vote while it is empty and a vote is open."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QPlainTextEdit

from .vote_bar import CHOICES

VOTE_KEYS = {key: choice for choice, _, key in CHOICES}


class PromptEdit(QPlainTextEdit):
    """The prompt box: Ctrl+Enter sends, Enter alone starts a new line.

    While it is empty and a vote is open, the keys 1-4 vote instead of typing.
    """

    submitted = Signal()
    vote_key = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.voting = lambda: False

    def keyPressEvent(self, event):
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submitted.emit()
            return
        if event.text() in VOTE_KEYS and not self.toPlainText() and self.voting():
            self.vote_key.emit(VOTE_KEYS[event.text()])
            return
        super().keyPressEvent(event)

