"""The main window: model and adapter pickers, the two panes, the prompt box, the settings.

Its menus are in ``menus``, its pickers in ``pickers``; each tab redraws itself for the
``Changes`` it shows (``ops.hub()``).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from diptych import paths
from diptych.models import catalog
from diptych.models.conversation import SIDES
from diptych.models.session import Changes, Contender
from diptych.training.store import Store, StoreVersionError

from . import ops
from .chat_controller import ChatController
from .chat_pane import ChatPane
from .data_view import DataView
from .menus import Menus
from .pickers import BLIND_PICKER_TIP, NO_ADAPTER, OPEN_FILE, Pickers
from .prompt_edit import VOTE_KEYS, PromptEdit
from .queue_view import QueueView
from .settings_panel import SettingsPanel
from .stats_view import StatsView
from .training_panel import TrainingPanel
from .vote_bar import CHOICES, VoteBar

__all__ = ["BLIND_PICKER_TIP", "NO_ADAPTER", "OPEN_FILE", "VOTE_KEYS", "MainWindow", "PromptEdit"]


class MainWindow(Menus, Pickers, QMainWindow):
    def __init__(self, data_dir: Path, parent=None):
        super().__init__(parent)
        self.data_dir = data_dir
        self.setWindowTitle("Diptych — base vs RL-tuned")
        self.resize(1280, 800)
        self.controller = ChatController(self)
        self._runnable: list = []  # the registered adapters the pickers offer
        self._blind_note = ""  # the status bar's word on a Blind switch mid-conversation
        self.model_path: Path | None = None
        self.store: Store | None = None
        self.store_error: str | None = None
        try:
            self.store = Store.open(data_dir)
        except StoreVersionError as exc:  # the file is left exactly as it is
            self.store_error = str(exc)
        # The session writes through its own connection, on its own thread: the views'
        # reads here never wait for a write, and a locked database never stalls the window.
        self.controller.session.store = Store(self.store.path) if self.store is not None else None

        # Toolbar: model, adapter, conversation controls.
        toolbar = QToolBar("Models")
        toolbar.setMovable(False)
        self.addToolBar(toolbar)
        self._build_pickers(toolbar)
        toolbar.addSeparator()
        self.new_action = QAction("New conversation", self)
        self.new_action.setShortcut(QKeySequence("Ctrl+N"))
        toolbar.addAction(self.new_action)
        self.blind_action = QAction("Blind", self)
        self.blind_action.setCheckable(True)
        self.blind_action.setToolTip("Randomise which side shows base and which tuned, and hide "
                                     "the names until you vote")
        toolbar.addAction(self.blind_action)
        self.status = QLabel()
        self.statusBar().addWidget(self.status, 1)

        # The chat tab: two panes over one prompt box.
        self.panes = {side: ChatPane(side) for side in SIDES}
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for side in SIDES:
            splitter.addWidget(self.panes[side])
        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("Ask both models… (Ctrl+Enter sends, Esc stops)")
        self.prompt.setMaximumHeight(90)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Ctrl+Enter")
        self.stop_button = QPushButton("Stop both")
        self.stop_button.setToolTip("Esc")
        self.stop_button.setEnabled(False)
        self.regenerate_button = QPushButton("Regenerate both")
        self.regenerate_button.setEnabled(False)  # nothing sent yet
        self.new_button = QPushButton("New conversation")
        self.new_button.setObjectName("new-conversation")
        self.new_button.setToolTip("Forget the turns so far (Ctrl+N): both panes start afresh")
        self.turn_label = QLabel(objectName="turn-count")
        self.turn_label.setStyleSheet("color: gray")
        self.turn_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.regenerate_button)
        prompt_column = QVBoxLayout()
        turn_row = QHBoxLayout()
        turn_row.addWidget(self.turn_label, 1)
        turn_row.addWidget(self.new_button)
        prompt_column.addLayout(turn_row)
        prompt_column.addWidget(self.prompt)
        prompt_row = QHBoxLayout()
        prompt_row.addLayout(prompt_column, 1)
        prompt_row.addLayout(buttons)
        chat = QWidget()
        self.chat_layout = QVBoxLayout(chat)
        self.chat_layout.addWidget(splitter, 1)
        self.vote_bar = VoteBar()
        self.chat_layout.addWidget(self.vote_bar)
        self.chat_layout.addLayout(prompt_row)
        self.tabs = QTabWidget()
        self.tabs.addTab(chat, "Chat")
        self.data_view = self.stats_view = self.queue_view = None
        if self.store is not None:
            session = self.controller.session
            self.queue_view = QueueView(self.controller, self.store)
            self.tabs.addTab(self.queue_view, "Queue")
            self.data_view = DataView(
                self.store, writer=lambda fn: session.store_queue.run(fn, session.store))
            self.stats_view = StatsView(self.store, model_path=lambda: self.model_path,
                                        data_dir=data_dir)
            self.tabs.addTab(self.data_view, "Data")
            self.tabs.addTab(_scrolling(self.stats_view), "Stats")
        self.training = TrainingPanel(data_dir, self.store, model_path=lambda: self.model_path)
        self.tabs.addTab(_scrolling(self.training), "Train")
        self.setCentralWidget(self.tabs)

        self.settings = SettingsPanel()
        dock = QDockWidget("Settings (both panes)")
        dock.setObjectName("settings")
        dock.setWidget(self.settings)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        # Narrow, so that a 1024-pixel window leaves the tabs room (the user can widen it).
        self.resizeDocks([dock], [dock.minimumSizeHint().width()], Qt.Orientation.Horizontal)
        self.settings_dock = dock

        self._build_menus()
        self._wire()
        self._fill_model_picker()
        self._select_model_item(None)
        self.refresh_adapters()
        # A job run from a shell, or a rename or delete there, lands in the adapters
        # folder (a job renames its finished folder into place): watch it.
        self.adapters_watch = QFileSystemWatcher([str(paths.adapters_dir(data_dir))], self)
        self.adapters_watch.directoryChanged.connect(self._adapters_folder_changed)
        if self.store_error:
            self._show_error("Votes are not being recorded", self.store_error)

    # -- wiring ------------------------------------------------------------------------

    def _wire(self) -> None:
        c = self.controller
        self.prompt.submitted.connect(self.send)
        self.prompt.voting = lambda: self.vote_bar.voting
        self.prompt.vote_key.connect(self.vote)
        for choice, _, key in CHOICES:
            QShortcut(QKeySequence(key), self, activated=lambda c=choice: self.vote(c))
        self.vote_bar.voted.connect(self.vote)
        self.vote_bar.better_written.connect(lambda text: self.vote("better", text))
        self.vote_bar.undo_requested.connect(c.undo_vote)
        self.vote_bar.retry_requested.connect(c.retry_vote)
        c.turn_complete.connect(self._offer_vote)
        c.vote_saving.connect(self.vote_bar.show_saving)
        c.vote_recorded.connect(self._on_vote_recorded)
        c.vote_failed.connect(self.vote_bar.show_failed)
        c.vote_undone.connect(lambda _id: self._offer_vote())
        c.blind_changed.connect(self._on_blind_changed)
        self.blind_action.toggled.connect(c.set_blind)
        self.training.use_adapter.connect(self._use_trained_adapter)
        ops.hub().changed.connect(self._on_changes)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=lambda: c.stop())
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(lambda: c.stop())
        self.regenerate_button.clicked.connect(lambda: c.regenerate())
        self.new_action.triggered.connect(c.new_conversation)
        self.new_button.clicked.connect(c.new_conversation)
        self.raw_action.toggled.connect(
            lambda raw: [pane.set_raw(raw) for pane in self.panes.values()])
        for pane in self.panes.values():
            pane.regenerate_requested.connect(c.regenerate)
            pane.stop_requested.connect(c.stop)
            pane.scores_requested.connect(c.score)
            pane.show_conversation(c.session.conversation)

        c.answer_started.connect(self._on_answer_started)
        c.answer_delta.connect(lambda side, text: self.panes[side].append(text))
        c.answer_finished.connect(self._on_answer_finished)
        c.answer_failed.connect(lambda side, msg: self.panes[side].end_answer(error=msg))
        c.busy_changed.connect(self._on_busy)
        c.loading_changed.connect(self._on_loading)
        c.engines_changed.connect(self._update_headers)  # the pickers follow the op's Changes
        c.conversation_reset.connect(self._on_reset)
        c.error.connect(self._show_error)
        c.scores_ready.connect(lambda side, comp: self.panes[side].show_scores(comp))
        c.scores_failed.connect(lambda side, msg: self.panes[side].clear_scores(f"Not scored: {msg}"))

        s = self.settings
        c.session.settings.params = s.params()
        s.params_changed.connect(lambda p: setattr(c.session.settings, "params", p))
        s.system_prompt_changed.connect(lambda t: setattr(c.session.settings, "system_prompt", t))
        s.template_override_changed.connect(self._override_template)

        self.model_picker.activated.connect(self._on_model_picked)
        for side, picker in self.pickers.items():
            picker.activated.connect(lambda index, side=side: self._on_adapter_picked(index, side))

    # -- actions -----------------------------------------------------------------------

    def send(self) -> None:
        if self.controller.send(self.prompt.toPlainText()):
            self.prompt.clear()
            for pane in self.panes.values():
                pane.show_conversation(self.controller.session.conversation)
            if len(self.controller.session.conversation.turns) == 1:
                self._update_headers()  # blind mode drew who shows where

    def vote(self, choice: str, better_text: str | None = None) -> None:
        """A vote from the Chat tab's bar or a key 1-4: the keys vote in the tab shown."""
        if self.queue_view is not None and self.tabs.currentWidget() is self.queue_view:
            self.queue_view.vote(choice)
        elif self.vote_bar.voting:
            self.controller.vote(choice, better_text)

    def open_model(self, path: str | Path, adapter: str | Path | None = None) -> None:
        path = Path(path)
        try:
            catalog.read_info(path)  # a bad file is refused before anything changes
        except catalog.ModelFileError as exc:
            self._show_error("Could not open the model", str(exc))
            self._select_model_item(self.model_path)
            return
        self.status.setText(f"Loading {path.name}…")

        def loaded():  # the pickers follow the load's Changes
            self.model_path = path
            self._remember_model(path)

        self.controller.load_model(path, adapter=adapter, on_loaded=loaded)

    def _on_changes(self, changes: Changes, initiator) -> None:
        """The window's own redraws (each tab redraws itself for what it shows)."""
        if changes.adapters or changes.contenders:
            self.refresh_adapters()  # the pickers: the registry, and each pane's adapter
        if changes.blind:
            self._update_headers()
        if changes.conversation:
            self._show_turns()

    # -- slots -------------------------------------------------------------------------

    def _override_template(self, source) -> None:
        try:
            self.controller.set_template_source(source)
        except ValueError as exc:
            self._show_error("Template not used", str(exc))
        self._update_headers()

    def _on_answer_started(self, side: str) -> None:
        self.panes[side].begin_answer()
        self.vote_bar.show_idle()
        self._show_turns()

    def _on_answer_finished(self, side: str, completion) -> None:
        self.panes[side].end_answer(completion)
        self._show_authors()
        self._update_score_buttons()

    def _offer_vote(self, *_):
        c = self.controller
        if c.can_vote:
            self.vote_bar.show_voting({s: c.last[s].text for s in SIDES},
                                      prompt=c.session.conversation.turns[-1].user)
        else:
            self.vote_bar.show_idle()
            if c.session.store is None:
                self.vote_bar.set_hint("Votes are off: the database could not be opened.")

    def _on_vote_recorded(self, vote_id: int, choice: str) -> None:
        self.vote_bar.show_recorded(choice, self.controller.session.vote_count)
        if self.controller.session.conversation_blind:
            self._update_headers()  # reveal who was who

    def _on_blind_changed(self, note: str) -> None:
        if note:
            self.statusBar().showMessage(note, 15_000)
        self._blind_note = note
        self._update_headers()

    def _show_turns(self) -> None:
        """Multi-turn is easy to miss: say how many turns the panes remember."""
        n = len(self.controller.session.conversation.turns)
        self.turn_label.setText(
            "New conversation: the panes remember nothing yet" if n == 0 else
            f"Turn {n} of this conversation: both panes see the earlier turns"
            if n > 1 else "Turn 1: a follow-up prompt continues this conversation")
        self.new_button.setEnabled(n > 0)

    def _update_score_buttons(self) -> None:
        """Δ vs base says which model moved, so in blind mode it waits for the vote; with
        no adapter in either pane nothing moved, so there is nothing to show."""
        c = self.controller
        tuned = any(c.session.contender(side).adapter is not None for side in SIDES)
        why = ("Δ vs base tells the models apart: it is available once you have voted"
               if c.session.hidden else "" if tuned else
               "Both panes run the base: choose an adapter for a pane to see where it moved")
        for pane in self.panes.values():
            pane.set_scoring_allowed(not why, why)

    def _update_buttons(self) -> None:
        """Enable what can act now: nothing to stop when idle, nothing to regenerate
        before a prompt was sent, nothing to send while a model loads."""
        c = self.controller
        idle = not c.busy
        self.stop_button.setEnabled(c.busy)
        self.send_button.setEnabled(idle and not c.loading)
        self.regenerate_button.setEnabled(idle and not c.loading and bool(c.session.conversation.turns))
        for widget in (self.model_picker, self.open_model_action, self.open_adapter_action):
            widget.setEnabled(idle)
        for picker in self.pickers.values():  # blind: who runs where waits for the vote
            picker.setEnabled(idle and not c.session.hidden)

    def _on_busy(self, _busy: bool) -> None:
        self._update_buttons()

    def _on_loading(self, loading: bool) -> None:
        self._update_buttons()
        if loading:
            self.status.setText("Loading…")
        else:
            self._show_engine_status()

    def _on_reset(self) -> None:
        if self._blind_note and self.statusBar().currentMessage() == self._blind_note:
            self.statusBar().clearMessage()  # "from the next conversation": this is it
        self.vote_bar.show_idle()
        self._update_buttons()
        for pane in self.panes.values():
            pane.show_conversation(self.controller.session.conversation)
            pane.stats.setText("")
        self._show_turns()
        self._update_headers()

    def _update_headers(self, refresh: bool = False) -> None:
        """Each pane's title (or blind), the template in use, the status line; with
        ``refresh``, the adapter pickers too (after a model or adapter change)."""
        c = self.controller
        session = c.session
        for side, pane in self.panes.items():
            engine, contender = c.session.engine(side), session.contender(side)
            pane.set_identity(contender.role, _label(engine, contender), hidden=c.session.hidden)
        self._show_authors()
        self._update_score_buttons()
        self._fill_pickers()
        template = c.session.template()
        if template is not None:
            self.settings.show_template(template.name, template.source)
        self._show_engine_status()
        if refresh:
            self.refresh_adapters()

    def _show_authors(self) -> None:
        """An answer keeps the name of the contender that wrote it: where that is not the
        pane's contender now (switched since), the answer says who wrote it."""
        c = self.controller
        for side, pane in self.panes.items():
            now = _maker(c.session.engine(side), c.session.contender(side))
            pane.set_authors({} if c.session.hidden else {
                turn: _label(engine, contender)
                for turn, (engine, contender) in c.authors(side).items()
                if _maker(engine, contender) != now})

    def _show_engine_status(self) -> None:
        engine = self.controller.engines.get("tuned")
        if engine is not None:
            self.status.setText(
                f"{engine.info.label} · context {engine.n_ctx} · {engine.n_threads} thread(s) per pane"
            )
        elif not self.controller.loading:
            self.status.setText("")

    def _show_error(self, title: str, message: str) -> None:
        # The dialog says it; the status line keeps saying what the window runs.
        self._show_engine_status()
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, parent=self)
        box.setObjectName("error-dialog")
        box.open()

    def closeEvent(self, event) -> None:
        """Before quitting, write the votes the database refused; while some cannot be
        written, ask: they are never dropped without the user's word."""
        if self.queue_view is not None:
            self.queue_view.controller.stop()  # an answer cut short is answered next time
        while left := self.controller.session.flush_votes():
            answer = QMessageBox.question(
                self, "Votes not recorded",
                f"{left} vote{'s' if left > 1 else ''} could not be written: the database is "
                "locked by another program or cannot be written. Retry, or quit without "
                f"{'them' if left > 1 else 'it'}?",
                QMessageBox.StandardButton.Retry | QMessageBox.StandardButton.Discard,
                QMessageBox.StandardButton.Retry)
            if answer != QMessageBox.StandardButton.Retry:
                break
        super().closeEvent(event)


def _label(engine, contender: Contender) -> str:
    """The model and adapter a pane's header names."""
    if engine is None:
        return "no model loaded"
    if contender.adapter is None:
        return f"{engine.info.name} · no adapter"
    scale = f" ×{contender.scale:g}" if contender.scale != 1.0 else ""
    return f"{engine.info.name} + LoRA {contender.name}{scale}"


def _maker(engine, contender: Contender) -> tuple:
    """What makes two answers the same contender's (an adapter keeps its id when renamed)."""
    return (engine.info.path if engine else None, contender.adapter_id, contender.scale)


def _scrolling(widget: QWidget) -> QScrollArea:
    """A tab that scrolls in a small window instead of squeezing its plots and footers."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    return area
