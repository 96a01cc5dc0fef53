"""Desktop defects: markup shown as text, a way back to a closed dock, buttons that cannot
act are off, both panes follow the answer, one name for the user's own answer."""

import argparse
import json

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QTextFormat
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QMessageBox,
    QTableWidget,
    QWidget,
)

from diptych.desktop import ops
from diptych.desktop.chat_pane import ChatPane
from diptych.desktop.main_window import MainWindow
from diptych.desktop.training_panel import TrainingPanel
from diptych.desktop.vote_bar import BetterAnswerDialog, VoteBar
from diptych.models.conversation import SIDES, Conversation

PROMPT = "Is <b>bold</b> valid? <script>alert('hi')</script>"
ANSWER = ("<div><script>document.write('x')</script></div> Yes, <i>it</i> is.\n\n"
          "```python\nprint('<b>code</b>')\n```\n")


def conversation(prompt: str = PROMPT, answer: str | None = ANSWER) -> Conversation:
    conv = Conversation()
    conv.add_user(prompt)
    for side in SIDES:
        conv.set_answer(side, answer)
    return conv


@pytest.fixture
def pane(qtbot):
    widget = ChatPane("left")
    qtbot.addWidget(widget)
    widget.resize(500, 400)
    widget.show()
    return widget


@pytest.fixture
def window(qtbot, data_dir):
    """The main window without a model: enough for menus, docks and buttons."""
    win = MainWindow(data_dir)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def code_blocks(browser) -> list[str]:
    found, block = [], browser.document().begin()
    while block.isValid():
        if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence):
            found.append(block.text())
        block = block.next()
    return found


def fonts(browser) -> set[tuple]:
    found, block = set(), browser.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            font = it.fragment().charFormat().font()
            found.add((font.family(), font.fixedPitch(), font.bold()))
            it += 1
        block = block.next()
    return found


# -- 1. markup in prompts and answers ---------------------------------------------------


def test_html_in_prompts_and_answers_shows_as_literal_text(pane):
    pane.show_conversation(conversation())
    shown = pane.transcript.toPlainText()
    assert "Is <b>bold</b> valid? <script>alert('hi')</script>" in shown
    assert "<div><script>document.write('x')</script></div> Yes, <i>it</i> is." in shown
    assert code_blocks(pane.transcript) == ["print('<b>code</b>')"]  # still a code block
    assert "**You:**" not in shown  # the app's own Markdown is still formatted


def test_an_unclosed_code_block_stays_in_its_answer(pane):
    conv = conversation(answer="Here:\n```\nprint(1)")
    conv.add_user("Next <b>question</b>")
    pane.show_conversation(conv)
    assert code_blocks(pane.transcript) == ["print(1)"]
    assert "You: Next <b>question</b>" in pane.transcript.toPlainText()


def test_markup_in_a_streaming_answer_shows_as_text(qtbot, pane):
    pane.show_conversation(conversation(prompt="Show me tags.", answer=None))
    pane.begin_answer()
    for piece in ("<b>", "tag", "</b>", " and <script>", "x", "</script>"):
        pane.append(piece)
    qtbot.waitUntil(lambda: "</script>" in pane.transcript.toPlainText(), timeout=2_000)
    assert "<b>tag</b> and <script>x</script>" in pane.transcript.toPlainText()


def test_raw_text_view_shows_the_exact_text(qtbot, window):
    for pane in window.panes.values():
        pane.show_conversation(conversation())
    window.raw_action.trigger()
    for pane in window.panes.values():
        assert pane.raw
        shown = pane.transcript.toPlainText()
        assert PROMPT in shown and ANSWER in shown  # fences, newlines and tags as written
        assert code_blocks(pane.transcript) == []
        assert len(fonts(pane.transcript)) == 1  # one plain format, none left from Markdown
    window.raw_action.trigger()
    assert code_blocks(window.panes["left"].transcript) == ["print('<b>code</b>')"]


# -- 2. the menu bar ----------------------------------------------------------------------


def menu_action(win, menu_title: str, text: str):
    for top in win.menuBar().actions():
        if top.text().replace("&", "") == menu_title:
            for action in top.menu().actions():
                if text in action.text().replace("&", ""):
                    return action
    raise LookupError(f"{menu_title} → {text}")


def test_view_menu_brings_back_the_closed_settings_dock(qtbot, window):
    dock = window.settings_dock
    assert dock.isVisible()
    dock.close()
    assert not dock.isVisible()
    menu_action(window, "View", "Settings").trigger()
    assert dock.isVisible()


def test_file_menu_exports_through_the_data_tab(qtbot, window, tmp_path, monkeypatch):
    out = tmp_path / "pairs.jsonl"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    menu_action(window, "File", "Export votes").trigger()
    ops.wait_for_queries()  # written off the UI thread
    assert out.exists()
    assert window.tabs.currentWidget() is window.data_view
    assert "Exported 0 lines" in window.data_view.message.text()


def test_file_menu_imports_through_the_data_tab(qtbot, window, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "no chosen"}) + "\n", encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[1:]))
    menu_action(window, "File", "Import votes").trigger()
    qtbot.waitUntil(lambda: bool(warnings), timeout=5_000)  # checked off the UI thread
    assert warnings[0][0] == "Import failed"
    assert window.store.votes() == []


def test_model_menu_opens_a_gguf_like_the_picker(qtbot, window, tmp_path, monkeypatch):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"not a model" * 100)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    menu_action(window, "Model", "Open GGUF").trigger()
    box = window.findChild(QMessageBox, "error-dialog")
    assert box is not None and "is not a GGUF file" in box.text()


def test_help_lists_the_real_keyboard_shortcuts(qtbot, window):
    menu_action(window, "Help", "Keyboard shortcuts").trigger()
    dialog = window.findChild(QDialog, "shortcuts-dialog")
    assert dialog is not None and dialog.isVisible()
    table = dialog.findChild(QTableWidget, "shortcuts-table")
    keys = [table.item(r, 0).text() for r in range(table.rowCount())]
    for expected in ("Ctrl+Enter", "Esc", "1", "2", "3", "4",
                     window.new_action.shortcut().toString(),
                     window.raw_action.shortcut().toString()):
        assert expected in keys
    dialog.close()


# -- 3. buttons that can do nothing are off ----------------------------------------------


def with_adapter(window, side: str = "right") -> None:
    """``side``'s pane runs an adapter (as the window knows it; no engine is loaded)."""
    from pathlib import Path

    from diptych.models.session import Contender

    window.controller.session.contenders[side] = Contender(Path("/gone/v1/adapter.gguf"),
                                                           "v1-id", "v1")
    window._update_headers()


def test_chat_buttons_are_off_until_they_can_act(qtbot, window):
    assert not window.regenerate_button.isEnabled()
    for pane in window.panes.values():
        assert not pane.scores_button.isEnabled()
        assert not pane.regenerate_button.isEnabled()
    # a finished turn: regenerate and Δ vs base can act
    with_adapter(window)
    window.controller.session.conversation = conversation(answer="Yes.")
    window._update_buttons()
    for pane in window.panes.values():
        pane.show_conversation(window.controller.session.conversation)
        assert pane.scores_button.isEnabled() and pane.regenerate_button.isEnabled()
    assert window.regenerate_button.isEnabled()
    # a new conversation: nothing to regenerate or score again
    with qtbot.waitSignal(window.controller.conversation_reset, timeout=2_000):
        window.new_action.trigger()
    assert not window.regenerate_button.isEnabled()
    for pane in window.panes.values():
        assert not pane.scores_button.isEnabled()
        assert not pane.regenerate_button.isEnabled()


def test_empty_answer_cannot_be_scored(pane):
    pane.show_conversation(conversation(answer=""))
    assert not pane.scores_button.isEnabled()
    pane.show_conversation(conversation(answer=None))  # a new turn, not answered yet
    assert not pane.scores_button.isEnabled()


def test_adapter_buttons_are_off_until_one_is_selected(qtbot, data_dir):
    panel = TrainingPanel(data_dir)
    qtbot.addWidget(panel)
    buttons = (panel.use_selected, panel.rename_button, panel.delete_button)
    assert panel.adapter_list.count() == 0
    assert not any(b.isEnabled() for b in buttons)
    folder = data_dir / "adapters" / "dpo-one"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"kind": "dpo"}), encoding="utf-8")
    panel.refresh_adapters()
    ops.wait_for_queries()
    assert panel.adapter_list.count() == 1
    assert not any(b.isEnabled() for b in buttons)  # listed, but none selected
    panel.adapter_list.setCurrentRow(0)
    assert all(b.isEnabled() for b in buttons)
    panel.refresh_adapters()  # the list is refilled: the selection stays
    ops.wait_for_queries()
    assert all(b.isEnabled() for b in buttons)
    panel.adapter_list.setCurrentRow(-1)
    assert not any(b.isEnabled() for b in buttons)


def test_adapters_made_outside_the_app_appear_without_a_restart(qtbot, window, data_dir):
    """Issue 22, item 2: `diptych train …` in a shell, a rename or a delete there: the
    pane pickers, the Train tab's list and Stats follow the adapters folder."""
    from diptych import paths
    from diptych.models import adapters

    def listed() -> dict[str, list[str]]:
        picker = window.pickers["left"]
        return {"picker": [picker.itemText(i).split(" · ")[0] for i in range(picker.count())],
                "train": [window.training.adapter_list.item(i).text().split(" · ")[0]
                          for i in range(window.training.adapter_list.count())],
                "stats": [info.name for info in window.stats_view.adapters]}

    def shows(*names: str) -> bool:
        return listed() == {"picker": ["Base (no adapter)", *names, "Open adapter file…"],
                            "train": [*names], "stats": [*names]}

    assert shows()
    # as a job does it: written in a hidden folder, renamed into place when complete
    hidden = paths.adapters_dir(data_dir) / ".tmp-v1"
    hidden.mkdir()
    (hidden / adapters.GGUF_NAME).write_bytes(b"GGUF")
    (hidden / adapters.META_NAME).write_text(json.dumps({"name": "v1", "kind": "kto"}))
    hidden.rename(hidden.parent / "v1")
    qtbot.waitUntil(lambda: shows("v1"), timeout=5_000)
    adapters.rename("v1", "v2", data_dir)
    qtbot.waitUntil(lambda: shows("v2"), timeout=5_000)
    adapters.delete("v2", data_dir)
    qtbot.waitUntil(lambda: shows(), timeout=5_000)


# -- 4. both panes follow the answer --------------------------------------------------------


@pytest.fixture
def two_panes(qtbot):
    holder = QWidget()
    row = QHBoxLayout(holder)
    panes = {side: ChatPane(side) for side in SIDES}
    for side in SIDES:
        row.addWidget(panes[side])
    qtbot.addWidget(holder)
    holder.resize(900, 360)
    holder.show()
    qtbot.waitExposed(holder)
    conv = conversation(prompt="Tell me a long story.", answer=None)
    for pane in panes.values():
        pane.show_conversation(conv)
        pane.begin_answer()
    yield panes
    holder.close()  # the holder (and so its panes) lives until the test is done


def stream(qtbot, panes, n_tokens: int) -> None:
    """Tokens arrive in both panes in turn, as the two workers deliver them."""
    for i in range(n_tokens):
        for pane in panes:
            pane.append(f"word{i} " + ("\n" if i % 7 == 6 else ""))
        if i % 10 == 9:
            qtbot.wait(20)
    qtbot.wait(150)  # the last throttled redraw


def bars(panes):
    return [pane.transcript.verticalScrollBar() for pane in panes]


def test_both_panes_follow_a_long_answer(qtbot, two_panes):
    panes = list(two_panes.values())
    stream(qtbot, panes, 400)
    for bar in bars(panes):
        assert bar.maximum() > 0 and bar.value() == bar.maximum()
    panes[0].end_answer()  # one side finishes first; the other streams on
    stream(qtbot, panes[1:], 200)
    panes[1].end_answer()
    holder = panes[0].parentWidget()
    holder.resize(holder.width(), holder.height() - 60)  # e.g. the vote bar takes room
    qtbot.wait(50)
    for bar in bars(panes):
        assert bar.maximum() > 0 and bar.value() == bar.maximum()


def test_a_pane_scrolled_up_is_not_yanked_down(qtbot, two_panes):
    panes = list(two_panes.values())
    stream(qtbot, panes, 300)
    left, right = bars(panes)
    left.setValue(10)  # the user scrolls the left pane up to read
    stream(qtbot, panes, 200)
    assert left.value() == 10 and left.maximum() > 10
    assert right.value() == right.maximum()
    left.setValue(left.maximum())  # back at the bottom: follow again
    stream(qtbot, panes, 100)
    assert left.value() == left.maximum()
    left.setValue(10)
    conv = two_panes["left"]._conversation  # both panes show the same conversation
    for side in SIDES:
        conv.set_answer(side, "The end.")
        two_panes[side].end_answer()
    conv.add_user("Another one.")
    for pane in panes:  # the next prompt: its answer is followed from the start
        pane.show_conversation(conv)
        pane.begin_answer()
    stream(qtbot, panes, 300)
    assert left.value() == left.maximum() and right.value() == right.maximum()


# -- 5. one name for the user's own answer ------------------------------------------------


def test_write_a_better_answer_shows_the_prompt(qtbot):
    bar = VoteBar()
    qtbot.addWidget(bar)
    bar.show_voting({"left": "What is 3 + 3?", "right": "Five."}, prompt=PROMPT)
    assert bar.write_button.text() == "Write a better answer…"
    seen = {}

    def inspect():
        dialog = QApplication.activeModalWidget()
        seen["dialog"] = dialog
        seen["prompt"] = dialog.prompt_view.toPlainText()
        seen["title"] = dialog.windowTitle()
        dialog.editor.setPlainText("Yes, <b> is valid HTML.")
        dialog.accept()

    QTimer.singleShot(0, inspect)
    with qtbot.waitSignal(bar.better_written, timeout=5_000) as blocker:
        bar.write_button.click()
    assert isinstance(seen["dialog"], BetterAnswerDialog)
    assert seen["prompt"] == PROMPT
    assert seen["title"] == "Write a better answer"
    assert blocker.args == ["Yes, <b> is valid HTML."]
    bar.show_recorded("better", 7)
    assert "Your answer" in bar.recorded.text() and "is better" not in bar.recorded.text()


def test_the_window_offers_the_prompt_to_the_dialog(qtbot, data_dir):
    """The real bundled model answers; the vote bar knows which prompt it answers."""
    from diptych.desktop.app import build_window

    win = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
    qtbot.addWidget(win)
    win.show()
    win.settings.max_tokens.setValue(8)
    qtbot.waitUntil(lambda: len(win.controller.engines) == 2, timeout=30_000)
    assert not win.regenerate_button.isEnabled()
    win.prompt.setPlainText("Name a <b>colour</b>.")
    with qtbot.waitSignal(win.controller.turn_complete, timeout=60_000):
        qtbot.keyClick(win.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert win.vote_bar.voting and win.vote_bar.prompt == "Name a <b>colour</b>."
    assert win.regenerate_button.isEnabled()
    assert "Name a <b>colour</b>." in win.panes["left"].text()
    with qtbot.waitSignal(win.controller.vote_recorded, timeout=5_000):
        win.vote("better", "Blue.")
    assert "Your answer" in win.vote_bar.recorded.text()
    assert win.store.votes()[-1]["choice"] == "better"


# -- the window keeps the size the user gives it, and small windows scroll ------------------


def settle(qtbot):
    qtbot.wait(50)


def test_the_window_never_widens_itself(qtbot, window):
    window.resize(1280, 800)
    settle(qtbot)
    long_line = "x" * 400
    window.controller.session.conversation = conversation(prompt=long_line, answer=long_line)
    for pane in window.panes.values():
        pane.show_conversation(window.controller.session.conversation)
        pane.end_answer(error="llama.cpp could not decode: " + long_line)
    window.vote_bar.show_failed("left", "database is locked " + long_line)
    window.vote_bar.show_voting({"left": long_line, "right": long_line}, prompt=long_line)
    window._show_turns()
    settle(qtbot)
    assert window.width() == 1280
    window.resize(1024, 700)
    settle(qtbot)
    assert (window.width(), window.height()) == (1024, 700)


def test_at_1024x700_tabs_scroll_instead_of_clipping(qtbot, window):
    from PySide6.QtWidgets import QScrollArea

    window.resize(1024, 700)
    for view in (window.stats_view, window.training):
        index = next(i for i in range(window.tabs.count())
                     if window.tabs.widget(i).isAncestorOf(view))
        window.tabs.setCurrentIndex(index)
        settle(qtbot)
        area = window.tabs.widget(index)
        assert isinstance(area, QScrollArea)
        assert view.height() >= view.minimumSizeHint().height()  # whole, not squeezed


# -- blind mode ----------------------------------------------------------------------------


def test_delta_vs_base_is_off_when_both_panes_run_the_base(qtbot, window):
    """Issue 22, item 9: base against base always scores +0.000, after 25 s."""
    window.controller.session.conversation = conversation(answer="Yes.")
    for pane in window.panes.values():
        pane.show_conversation(window.controller.session.conversation)
    window._update_headers()
    for pane in window.panes.values():
        assert not pane.scores_button.isEnabled()
        assert "Both panes run the base" in pane.scores_button.toolTip()
    with_adapter(window, "left")
    assert all(pane.scores_button.isEnabled() for pane in window.panes.values())


def test_the_blind_hint_goes_when_the_next_conversation_starts(qtbot, window):
    """Issue 22, item 9: "from the next conversation" is stale once that one started."""
    window.controller.session.conversation = conversation(answer="Yes.")
    window.blind_action.setChecked(True)
    assert "next conversation" in window.statusBar().currentMessage()
    with qtbot.waitSignal(window.controller.conversation_reset, timeout=2_000):
        window.new_action.trigger()
    assert window.statusBar().currentMessage() == ""


def test_blind_mode_keeps_the_conversation_and_holds_back_delta(qtbot, window):
    session = window.controller.session
    with_adapter(window)
    window.controller.session.conversation = conversation(answer="Yes.")
    for pane in window.panes.values():
        pane.show_conversation(window.controller.session.conversation)
    window.blind_action.setChecked(True)  # mid-conversation: kept, and the user is told
    assert window.controller.session.conversation.turns
    assert "next conversation" in window.statusBar().currentMessage()
    assert all(pane.scores_button.isEnabled() for pane in window.panes.values())
    session._record.blind = True  # a conversation started blind, not voted on yet
    window._update_headers()
    for pane in window.panes.values():
        assert "hidden until you vote" in pane.header.text()
        assert not pane.scores_button.isEnabled()  # Δ vs base would tell who is who
        assert "once you have voted" in pane.scores_button.toolTip()
    session.revealed = True
    window._update_headers()
    assert all(pane.scores_button.isEnabled() for pane in window.panes.values())


# -- errors: a dialog line, not a status line or a bytes repr -------------------------------


def test_an_error_is_one_dialog_line_and_leaves_the_status_bar(qtbot, window, tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    window.open_model(bad)
    box = window.findChild(QMessageBox, "error-dialog")
    assert box is not None and "is not a GGUF file" in box.text()
    assert "b'" not in box.text() and "\n" not in box.text()
    assert "GGUF" not in window.status.text()  # said once, in the dialog


# -- multi-turn shows ------------------------------------------------------------------------


def test_the_turn_count_shows_and_new_conversation_is_a_button(qtbot, window):
    window._show_turns()
    assert not window.new_button.isEnabled() and "remember nothing" in window.turn_label.text()
    conv = conversation(answer="Yes.")
    conv.add_user("And then?")
    window.controller.session.conversation = conv
    window._show_turns()
    assert "Turn 2" in window.turn_label.text() and window.new_button.isEnabled()
    with qtbot.waitSignal(window.controller.conversation_reset, timeout=2_000):
        window.new_button.click()
    assert "remember nothing" in window.turn_label.text()


# -- tokens a font cannot draw ---------------------------------------------------------------


def test_a_token_that_would_be_a_box_shows_its_id(pane):
    from types import SimpleNamespace

    from diptych.desktop import token_view

    tokens = [SimpleNamespace(id=i, text=text, log_ratio=0.0)
              for i, text in ((10, "Hi"), (11, "\ufffd"), (12, "\ue000"), (13, " 日本"))]
    rendered = token_view.tokens_html(SimpleNamespace(tokens=tokens))
    assert "Hi" in rendered and " 日本" in rendered
    assert "⟨id 11⟩" in rendered and "⟨id 12⟩" in rendered and "\ufffd" not in rendered
