"""The window against the real bundled model, offscreen."""

import math
import subprocess
import sys

from helpers import register_lora, send, wait_idle, write_small_gguf
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QTableWidget

from diptych.desktop import ops


def test_one_prompt_fills_both_panes(qtbot, window):
    assert "Base" in window.panes["left"].header.text()
    assert "no adapter" in window.panes["right"].header.text()
    send(qtbot, window, "What is the capital of France?")
    assert window.controller.is_running("left") and window.controller.is_running("right")
    wait_idle(qtbot, window)
    for side in ("left", "right"):
        pane = window.panes[side]
        answer = window.controller.session.conversation.turns[0].answers[side]
        assert answer is not None and answer.strip()
        assert "What is the capital of France?" in pane.text()
        assert "tok/s" in pane.stats.text()
    assert window.prompt.toPlainText() == ""


def test_multi_turn_each_side_keeps_its_own_answers(qtbot, window):
    send(qtbot, window, "Name a colour.")
    wait_idle(qtbot, window)
    send(qtbot, window, "Another one?")
    wait_idle(qtbot, window)
    conv = window.controller.session.conversation
    assert len(conv.turns) == 2
    left, right = conv.messages("left"), conv.messages("right")
    assert [m["role"] for m in left] == ["user", "assistant", "user"]
    assert left[1]["content"] == conv.turns[0].answers["left"]
    assert right[1]["content"] == conv.turns[0].answers["right"]


def test_escape_stops_both_and_new_conversation_clears(qtbot, window):
    window.settings.max_tokens.setValue(2000)
    send(qtbot, window, "Tell me a very long story about the sea.")
    qtbot.waitUntil(lambda: len(window.controller.partial["left"]) > 0, timeout=20_000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    wait_idle(qtbot, window, timeout=5_000)
    for side in ("left", "right"):
        assert window.controller.last[side].finish_reason == "cancelled"
        assert window.controller.last[side].n_tokens < 500
    window.new_action.trigger()
    qtbot.waitUntil(lambda: not window.controller.session.conversation.turns, timeout=5_000)
    assert "Tell me" not in window.panes["left"].text()


def test_regenerate_one_pane_only(qtbot, window):
    send(qtbot, window, "Say something.")
    wait_idle(qtbot, window)
    left_before = window.controller.session.conversation.turns[0].answers["left"]
    window.panes["right"].regenerate_button.click()
    assert window.controller.is_running("right") and not window.controller.is_running("left")
    wait_idle(qtbot, window)
    assert window.controller.session.conversation.turns[0].answers["left"] == left_before
    # issue 22, item 5: while either pane writes, neither pane's contender can change
    window.panes["left"].regenerate_button.click()
    assert not any(picker.isEnabled() for picker in window.pickers.values())
    wait_idle(qtbot, window)
    assert all(picker.isEnabled() for picker in window.pickers.values())


def test_an_answer_keeps_the_name_of_the_contender_that_wrote_it(qtbot, window, bundled_model):
    """Issue 22, item 4: after "Use in tuned pane" the base's answer is not relabelled."""
    folder = register_lora(window.data_dir, "v1", bundled_model)
    send(qtbot, window, "Name a colour.")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        window.training.use_adapter.emit(str(folder / "adapter.gguf"))  # Use in tuned pane
    right, left = window.panes["right"], window.panes["left"]
    assert "LoRA v1" in right.header.text()
    assert "Answered by Gemma 3 270m · no adapter" in right.text()
    assert "Answered by" not in left.text()
    send(qtbot, window, "Another one?")
    wait_idle(qtbot, window)
    first, second = right.text().split("You: Another one?")
    assert "Answered by Gemma 3 270m · no adapter" in first and "Answered by" not in second
    assert window.store.votes() == [] and window.controller.written_by[(1, "right")].contender.name == "v1"


def test_bad_gguf_gets_a_dialog_and_keeps_the_model(qtbot, window, tmp_path):
    before = window.controller.engines["base"]
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"hello, this is not a model" * 100)
    window.open_model(bad)
    box = window.findChild(QMessageBox, "error-dialog")
    assert box is not None and "is not a GGUF file" in box.text()
    assert window.controller.engines["base"] is before
    assert window.model_path != bad
    # what llama.cpp would abort on, or hang in, is refused before it sees the file
    for crafted, problem in (
            (write_small_gguf(tmp_path / "nan.gguf", {"attention.layer_norm_rms_epsilon": math.nan}),
             "llama.attention.layer_norm_rms_epsilon is nan"),
            (write_small_gguf(tmp_path / "huge.gguf", template="{{ 'A' * 2000000000 }}"),
             "makes a repeated string of 2,000,000,000 characters"),
            (write_small_gguf(tmp_path / "broken.gguf", template="{% for %}"), "does not parse")):
        box.close()
        box.deleteLater()
        qtbot.waitUntil(lambda: window.findChild(QMessageBox, "error-dialog") is None)
        window.open_model(crafted)
        box = window.findChild(QMessageBox, "error-dialog")
        assert box is not None and problem in box.text() and "\n" not in box.text()
        assert window.controller.engines["base"] is before


def test_unloadable_architecture_keeps_the_model(qtbot, window, tiny_gguf):
    before = window.controller.engines["base"]
    with qtbot.waitSignal(window.controller.error, timeout=20_000) as blocker:
        window.open_model(tiny_gguf)
    assert "llama.cpp could not load" in blocker.args[1]
    assert window.controller.engines["base"] is before


def test_vote_with_a_key_is_stored_and_undone(qtbot, window):
    send(qtbot, window, "What is 2 + 2?")
    wait_idle(qtbot, window)
    assert window.vote_bar.voting
    window.prompt.setFocus()
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=2_000) as blocker:
        qtbot.keyClick(window.prompt, Qt.Key.Key_2)
    vote_id, choice = blocker.args
    assert choice == "right" and window.prompt.toPlainText() == ""
    stored = window.store.vote_by_id(vote_id)
    assert stored["choice"] == "right" and stored["deleted_at"] is None
    assert "Right is better" in window.vote_bar.recorded.text()
    with qtbot.waitSignal(window.controller.vote_undone, timeout=2_000):
        window.vote_bar.undo_button.click()
    assert window.store.vote_by_id(vote_id)["deleted_at"] is not None
    assert window.vote_bar.voting
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=2_000):
        window.vote_bar.buttons["tie"].click()
    assert window.store.votes()[-1]["choice"] == "tie"
    # numbered by the votes that count: the undone one is not counted
    assert "1 vote in all" in window.vote_bar.recorded.text()


def test_vote_keeps_exact_texts_and_sampling(qtbot, window):
    send(qtbot, window, "Name a fruit.")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=2_000):
        window.vote_bar.buttons["left"].click()
    vote = window.store.votes()[-1]
    for side in ("left", "right"):
        response = vote[side]
        assert response["text"] == window.controller.session.conversation.turns[0].answers[side]
        assert response["params"]["max_tokens"] == 12
        assert response["prompt_messages"][-1] == {"role": "user", "content": "Name a fruit."}
        assert response["template_name"] == "gemma"
        assert response["model_sha256"]


def test_blind_mode_hides_labels_until_the_vote(qtbot, window, bundled_model):
    register_lora(window.data_dir, "v1", bundled_model)
    window.refresh_adapters()
    ops.wait_for_queries()
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        window.adapter_picker.activated.emit(1)
    window.blind_action.setChecked(True)
    send(qtbot, window, "Hello there.")
    wait_idle(qtbot, window)
    for pane in window.panes.values():
        assert "hidden until you vote" in pane.header.text()
        assert "Gemma" not in pane.header.text()
    # issue 22, item 1: nor do the toolbar's pickers say who is where
    for picker in window.pickers.values():
        assert picker.currentText() == "" and picker.placeholderText() == "hidden until you vote"
        assert not picker.isEnabled()
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=2_000):
        qtbot.keyClick(window.prompt, Qt.Key.Key_3)
    headers = [p.header.text() for p in window.panes.values()]
    assert all("Gemma" in h for h in headers)
    assert {"Base" in headers[0], "Base" in headers[1]} == {True, False}
    for side, pane in window.panes.items():  # revealed: each picker names its pane's contender
        picker = window.pickers[side]
        assert picker.isEnabled()
        assert picker.currentText().startswith("v1") == ("LoRA v1" in pane.header.text())
    assert window.store.votes()[-1]["blind"] == 1


def test_a_vote_shows_in_the_data_view(qtbot, window):
    send(qtbot, window, "Name an animal.")
    wait_idle(qtbot, window)
    table = window.data_view.findChild(QTableWidget, "votes-table")
    with qtbot.waitSignal(window.controller.vote_recorded, timeout=2_000):
        window.vote_bar.buttons["left"].click()
    qtbot.waitUntil(lambda: table.model().rowCount() == 1, timeout=2_000)
    with qtbot.waitSignal(window.controller.vote_undone, timeout=2_000):
        window.vote_bar.undo_button.click()
    qtbot.waitUntil(lambda: table.model().rowCount() == 0, timeout=2_000)


def use_lora(qtbot, window, bundled_model, side="right"):
    """``side``'s pane runs a registered random LoRA, v1."""
    register_lora(window.data_dir, "v1", bundled_model)
    window.refresh_adapters()
    ops.wait_for_queries()
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        window.pickers[side].activated.emit(1)


def test_log_ratio_view_colours_tokens(qtbot, window, bundled_model):
    use_lora(qtbot, window, bundled_model)
    send(qtbot, window, "What is the capital of France?")
    wait_idle(qtbot, window)
    pane = window.panes["right"]
    with qtbot.waitSignal(window.controller.scores_ready, timeout=30_000) as blocker:
        pane.scores_button.click()
    side, comparison = blocker.args
    assert side == "right"
    assert any(t.log_ratio != 0.0 for t in comparison.tokens)  # the LoRA moved it
    assert len(comparison.tokens) == window.controller.last["right"].n_tokens
    assert "tok:0" in pane.transcript.toHtml()
    assert "nats" in pane.score_summary.text()
    assert "not a KL estimate" in pane.score_summary.text()  # sampled at temperature 0.8
    pane.scores_button.click()
    assert pane.comparison is None and "tok:0" not in pane.transcript.toHtml()


def test_both_panes_can_be_scored_at_once(qtbot, window, bundled_model):
    """Each scoring uses both engines: the second request waits for the first."""
    use_lora(qtbot, window, bundled_model)
    send(qtbot, window, "Name a colour.")
    wait_idle(qtbot, window)
    scored, failed = [], []
    window.controller.scores_ready.connect(lambda side, _: scored.append(side))
    window.controller.scores_failed.connect(lambda side, message: failed.append(message))
    for pane in window.panes.values():
        pane.scores_button.click()
    qtbot.waitUntil(lambda: len(scored) + len(failed) == 2, timeout=60_000)
    assert failed == [] and sorted(scored) == ["left", "right"]
    assert not window.controller.loading
    assert all(pane.comparison is not None for pane in window.panes.values())


def test_signals_do_not_leak_references_to_true():
    """PySide6 6.12.0 drops a reference to True on every Signal.emit: on Python < 3.12 the
    process aborts ("bool_dealloc") after some thousands of streamed tokens. Guard the pin."""
    code = ("import sys\nfrom PySide6.QtCore import QObject, Signal\n"
            "class S(QObject):\n    sig = Signal(str, object)\n"
            "s = S()\nbefore = sys.getrefcount(True)\n"
            "for _ in range(10_000):\n    s.sig.emit('x', None)\n"
            "print(before - sys.getrefcount(True))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and int(done.stdout) < 100, done.stderr[-500:]
