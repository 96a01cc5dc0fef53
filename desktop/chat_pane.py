"""One side of the diptych: a header naming the model, the transcript, and per-pane controls."""

from __future__ import annotations

import html
import re

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QCursor, QDesktopServices, QTextDocument
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QToolTip,
    QVBoxLayout,
)
from superqt import QElidingLabel
from superqt.utils import qthrottled

from diptych.models.conversation import Conversation

from . import token_view


# Markdown as GitHub writes it, but raw HTML in a prompt or an answer is text, not markup:
# the user votes on what the model wrote, so ``<b>`` must show as ``<b>``.
MARKDOWN = (QTextDocument.MarkdownFeature.MarkdownDialectGitHub
            | QTextDocument.MarkdownFeature.MarkdownNoHTML)
SCORES_TIP = ("Colour each token of the last answer by log p_tuned − log p_base: the pane's "
              "adapter (or the other pane's, for a base answer) against the base; hover a "
              "token for details")
FOLLOW_SLACK = 4  # pixels from the bottom that still count as "at the bottom"


class ChatPane(QFrame):
    regenerate_requested = Signal(str)
    stop_requested = Signal(str)
    scores_requested = Signal(str)  # side: colour my last answer by tuned-vs-base log-ratio

    def __init__(self, side: str, parent=None):
        super().__init__(parent)
        self.side = side
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.header = QLabel()
        self.header.setObjectName(f"{side}-header")
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.transcript = QTextBrowser()
        self.transcript.setObjectName(f"{side}-transcript")
        # A link in a model's answer never replaces the transcript; web links open outside.
        self.transcript.setOpenLinks(False)
        self.transcript.anchorClicked.connect(_open_web_link)
        # A long line of numbers or an error must never widen the window: it ends in "…"
        # at the pane's edge (the tooltip has it whole).
        self.stats = QElidingLabel("")
        self.stats.setObjectName(f"{side}-stats")
        self.stats.setStyleSheet("color: gray")
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Sample this pane's last answer again")
        self.regenerate_button.clicked.connect(lambda: self.regenerate_requested.emit(self.side))
        self.regenerate_button.setEnabled(False)  # nothing to regenerate yet
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(lambda: self.stop_requested.emit(self.side))
        self.stop_button.setEnabled(False)
        self.scores_button = QPushButton("Δ vs base")
        self.scores_button.setObjectName(f"{side}-scores")
        self.scores_button.setCheckable(True)
        self.scores_button.setEnabled(False)
        self.scores_button.setToolTip(SCORES_TIP)
        self.scores_button.toggled.connect(self._toggle_scores)
        self.score_summary = QLabel()
        self.score_summary.setObjectName(f"{side}-score-summary")
        self.score_summary.setWordWrap(True)
        self.score_summary.setVisible(False)
        self.transcript.highlighted.connect(self._hover_token)

        bar = QHBoxLayout()  # the numbers get a row of their own: the buttons leave no room
        bar.addStretch(1)
        bar.addWidget(self.scores_button)
        bar.addWidget(self.regenerate_button)
        bar.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.score_summary)
        layout.addWidget(self.stats)
        layout.addLayout(bar)

        self._scoring_allowed = True  # off in blind mode until the vote
        self._can_score = False  # a finished answer with tokens is shown
        self._conversation: Conversation | None = None
        self._authors: dict[int, str] = {}  # turn -> who wrote its answer, if not the header's
        self._shown_turns = 0
        self._partial = ""
        self._streaming = False
        self.raw = False  # show the exact text, no Markdown
        self.comparison = None  # the scored last answer, while the toggle is on
        # Follow new text while the user is at the bottom; stay put once they scroll up.
        self._follow = True
        self._held = 0  # where the user left the view when not following
        self._placing = False  # the view is being moved by us, not by the user
        bar = self.transcript.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)

    # -- header ------------------------------------------------------------------------

    def set_identity(self, role: str | None, label: str, hidden: bool = False) -> None:
        """Say which model and adapter produce this pane's text (or hide it, when blind)."""
        name = "Model A" if self.side == "left" else "Model B"
        if hidden:
            text = f"<b>{name}</b> &nbsp;<span style='color:gray'>hidden until you vote</span>"
        else:
            title = {"base": "Base", "tuned": "Tuned"}.get(role or "", name)
            text = f"<b>{title}</b> &nbsp;·&nbsp; {html.escape(label)}"
        self.header.setText(text)
        self.header.setToolTip("" if hidden else label)

    def set_authors(self, authors: dict[int, str]) -> None:
        """Name the contender that wrote each answer listed (by turn): those the header,
        which names the pane's contender now, does not."""
        if authors != self._authors:
            self._authors = dict(authors)
            self._render()

    # -- transcript --------------------------------------------------------------------

    def show_conversation(self, conversation: Conversation) -> None:
        if (conversation is not self._conversation
                or len(conversation.turns) != self._shown_turns):
            self._follow = True  # a new prompt or conversation: show its answer as it comes
        self._shown_turns = len(conversation.turns)
        self._conversation = conversation
        self._partial = ""
        if self._last_answer() is None:  # a new turn or conversation: nothing scored to show
            self.clear_scores()
        self._can_score = bool(self._last_answer()) and not self._streaming
        self._enable_scores()
        self.regenerate_button.setEnabled(bool(conversation.turns) and not self._streaming)
        self._render()

    def set_raw(self, raw: bool) -> None:
        """Show the exact text of every turn, unformatted (or Markdown again)."""
        self.raw = raw
        self._render()

    def _last_answer(self) -> str | None:
        conv = self._conversation
        return conv.turns[-1].answers.get(self.side) if conv is not None and conv.turns else None

    def begin_answer(self) -> None:
        self.clear_scores()
        self._can_score = False
        self._enable_scores()
        self._partial = ""
        self._streaming = True
        self.stop_button.setEnabled(True)
        self.regenerate_button.setEnabled(False)
        self.stats.setText("generating…")
        self.stats.setToolTip("")
        self._render()

    def append(self, text: str) -> None:
        self._partial += text
        self._render_throttled()

    def end_answer(self, completion=None, error: str | None = None) -> None:
        self._streaming = False
        self.stop_button.setEnabled(False)
        self.regenerate_button.setEnabled(self._conversation is not None
                                          and bool(self._conversation.turns))
        self._can_score = completion is not None and completion.n_tokens > 0
        self._enable_scores()
        if error:
            self.stats.setText(f"error: {error}")
            self.stats.setToolTip(error)
        elif completion is not None:
            stopped = " · stopped" if completion.finish_reason == "cancelled" else ""
            self.stats.setText(
                f"{completion.n_tokens} tokens · {completion.tokens_per_s:.1f} tok/s · "
                f"first token {completion.ttft_s * 1000:.0f} ms{stopped}"
            )
            self.stats.setToolTip(self.stats.text())  # whole, where a narrow pane cuts it
        self._render()

    def text(self) -> str:
        return self.transcript.toPlainText()

    @qthrottled(timeout=50)  # one throttle per pane (superqt binds it to the instance)
    def _render_throttled(self) -> None:
        self._render()

    # -- log-ratio view ---------------------------------------------------------------

    def set_scoring_allowed(self, allowed: bool, why: str = "") -> None:
        """Allow "Δ vs base" (blind mode forbids it until the vote: it tells who is who)."""
        self._scoring_allowed = allowed
        if not allowed and self.comparison is not None:
            self.clear_scores()
        self.scores_button.setToolTip(why or SCORES_TIP)
        self._enable_scores()

    def _enable_scores(self) -> None:
        self.scores_button.setEnabled(self._scoring_allowed and self._can_score)

    def show_scores(self, comparison) -> None:
        self.comparison = comparison
        self.score_summary.setText(token_view.legend_html() + token_view.summary_text(comparison))
        self.score_summary.setVisible(True)
        self._render()

    def clear_scores(self, message: str | None = None) -> None:
        self.comparison = None
        self.scores_button.blockSignals(True)
        self.scores_button.setChecked(False)
        self.scores_button.blockSignals(False)
        self.score_summary.setText(message or "")
        self.score_summary.setVisible(bool(message))
        self._render()

    def _toggle_scores(self, on: bool) -> None:
        if on:
            self.score_summary.setText("Scoring the answer under both models…")
            self.score_summary.setVisible(True)
            self.scores_requested.emit(self.side)
        else:
            self.clear_scores()

    def _hover_token(self, url) -> None:
        link = url.toString() if hasattr(url, "toString") else str(url)
        if self.comparison is None or not link.startswith("tok:"):
            QToolTip.hideText()
            return
        QToolTip.showText(QCursor.pos(), token_view.tooltip_html(self.comparison, int(link[4:])),
                          self.transcript)

    def _render_scored(self) -> None:
        conv = self._conversation
        parts = []
        for i, turn in enumerate(conv.turns):
            parts.append(f"<p><b>You:</b> {html.escape(turn.user.strip())}</p>")
            if i in self._authors:
                parts.append(f"<p><i>Answered by {html.escape(self._authors[i])}:</i></p>")
            if i < len(conv.turns) - 1:
                answer = html.escape(turn.answers.get(self.side) or "").replace("\n", "<br>")
                parts.append(f"<p>{answer}</p><hr>")
        parts.append(f"<p style='line-height:150%'>{token_view.tokens_html(self.comparison)}</p>")
        self._place(lambda: self.transcript.setHtml("".join(parts)))

    def _turns(self):
        """(user text, answer text) of each turn, the last one with the streamed part."""
        conv = self._conversation
        last = len(conv.turns) - 1
        for i, turn in enumerate(conv.turns):
            answer = turn.answers.get(self.side)
            if i == last and (self._streaming or answer is None):
                answer = self._partial
            yield turn.user, answer or ""

    def _render(self) -> None:
        if self.comparison is not None and self._conversation is not None:
            self._render_scored()
            return
        conv = self._conversation
        if self.raw:
            parts = []
            if conv is not None:
                if conv.system.strip():
                    parts.append(f"System: {conv.system}")
                for i, (user, answer) in enumerate(self._turns()):
                    parts.append(f"You: {user}")
                    if i in self._authors:
                        parts.append(f"(Answered by {self._authors[i]})")
                    parts += [answer, "—" * 8]
                if self._streaming and len(parts) >= 2:
                    parts[-2] += " ▍"
            text = "\n\n".join(parts)
            # the document's own setPlainText: no format left over from the Markdown view
            self._place(lambda: self.transcript.document().setPlainText(text))
            return
        parts = []
        if conv is not None:
            if conv.system.strip():
                parts.append(f"*System: {conv.system.strip()}*")
            turns = list(self._turns())
            for i, (user, answer) in enumerate(turns):
                if self._streaming and i == len(turns) - 1:
                    answer += " ▍"
                parts.append("**You:** " + _keep_line_breaks(user.strip()))
                if i in self._authors:
                    parts.append(f"*Answered by {_escape_markdown(self._authors[i])}:*")
                parts.append(_keep_line_breaks(answer))
                parts.append("---")
        markdown = "\n\n".join(parts)
        self._place(lambda: self.transcript.document().setMarkdown(markdown, MARKDOWN))

    # -- following the answer -----------------------------------------------------------

    def _place(self, set_content) -> None:
        """Replace the transcript and keep the view where the user wants it: at the end
        while they are following the answer, else where they left it."""
        self._placing = True
        try:
            set_content()
        finally:
            self._placing = False
        self._restore_view()

    def _restore_view(self) -> None:
        bar = self.transcript.verticalScrollBar()
        self._placing = True
        try:
            bar.setValue(bar.maximum() if self._follow else min(self._held, bar.maximum()))
        finally:
            self._placing = False

    def _scrolled(self, value: int) -> None:
        if self._placing:
            return
        bar = self.transcript.verticalScrollBar()
        self._follow = value >= bar.maximum() - FOLLOW_SLACK
        self._held = value

    def _range_changed(self, _minimum: int, _maximum: int) -> None:
        # The document is laid out after it is set, and a window resize moves the range:
        # either way the view goes back to the end (or to where the user left it).
        self._restore_view()


def _open_web_link(url: QUrl) -> None:
    if url.scheme() in ("http", "https"):
        QDesktopServices.openUrl(url)


def _escape_markdown(text: str) -> str:
    """A name shown as itself in Markdown (an adapter may be called dpo_v1*)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def _keep_line_breaks(text: str) -> str:
    """Show a model's single newlines as line breaks (Markdown would join the lines),
    leaving fenced code blocks as they are, and close a block the text left open (so it
    does not swallow the rest of the transcript)."""
    pieces = text.split("```")
    for i in range(0, len(pieces), 2):
        pieces[i] = pieces[i].replace("\n", "  \n")
    closing = "\n```" if len(pieces) % 2 == 0 else ""
    return "```".join(pieces) + closing
