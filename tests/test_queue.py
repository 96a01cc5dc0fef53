"""The vote queue: a prompt set both contenders answer ahead of the person, voted through
with the keys, kept in the store (the real bundled model, offscreen)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

from helpers import register_lora
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from diptych.cli import main
from diptych.desktop import ops
from diptych.models.conversation import SIDES
from diptych.training.store import Store

PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hello.",
           "What do bees make?", "Who wrote Hamlet?", "Name a fruit.", "Name a river.",
           "What is two plus three?", "Name a planet.", "Say goodbye."]


def prompts_file(tmp_path, lines=PROMPTS, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def queue(qtbot, win, source: str, count: int = 20, path=None):
    """Queue ``source`` from the Queue tab (its combo, path and count, then the button)."""
    view = win.queue_view
    win.tabs.setCurrentWidget(view)
    view.source.setCurrentIndex(view.source.findData("file" if path else source))
    if path:
        view.path.setText(str(path))
    view.count.setValue(count)
    before = view.controller.queue
    view.queue_button.click()
    qtbot.waitUntil(lambda: view.controller.queue is not before, timeout=10_000)
    return view.controller.queue


def next_pair(qtbot, view) -> dict:
    """Wait for the pair on screen; its answers as shown."""
    qtbot.waitUntil(lambda: view.vote_bar.voting, timeout=30_000)
    return {side: view.answer_views[side].toPlainText() for side in SIDES}


def press(qtbot, win, key) -> None:
    qtbot.keyClick(win, key)


def live_votes(data_dir):
    with Store.open(data_dir) as store:
        return store.votes()


def test_each_source_queues_its_prompts(qtbot, window, tmp_path):
    """A text file, JSON lines with a prompt column, a task, the history, the held-out
    prompts; the count is how many."""
    view = window.queue_view
    view.pause_button.click()  # nothing is answered: this is about what is queued
    text = prompts_file(tmp_path)
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "Name a river.", "target": "Nile"}\n'
                     '{"prompt": [{"role": "system", "content": "Be brief."}, '
                     '{"role": "user", "content": "Name a sea."}], "target": "Red"}\n')
    with Store.open(window.data_dir) as store:  # a chat history of two prompts
        from helpers import record_sample_vote

        record_sample_vote(store, prompt="What is 2+2?")
        record_sample_vote(store, prompt="What is 3+3?")
    expected = [
        (dict(source="file", path=text, count=4), str(text.resolve()), PROMPTS[:4]),
        (dict(source="file", path=jsonl), str(jsonl.resolve()), ["Name a river.", "Name a sea."]),
        (dict(source="task:arith", count=3), "task:arith", None),
        (dict(source="history"), "history", ["What is 3+3?", "What is 2+2?"]),
        (dict(source="held-out", count=2), "held-out", None),
    ]
    for how, source, prompts in expected:
        q = queue(qtbot, window, **how)
        assert q.source == source and view.progress.text() == f"1 of {len(q.items)}"
        users = [item.prompt[-1]["content"] for item in q.items]
        if prompts is not None:
            assert users == prompts
        else:
            assert len(users) == how["count"] and all(u.strip() for u in users)
        assert view.prompt_view.toPlainText().endswith(users[0])
    with Store.open(window.data_dir) as store:
        rows = store.queues()
        assert [r["source"] for r in rows] == [s for _, s, _ in reversed(expected)]
        assert store.queue_items(rows[3]["id"])[1]["prompt"][0] == {"role": "system",
                                                                   "content": "Be brief."}
    ops.wait_for_queries()
    assert view.queues.count() == 5 and "0 of 2 done" in view.queues.currentText()


def test_voting_through_with_the_keys(qtbot, window, tmp_path, bundled_model):
    """Each vote is a vote like the panes': the texts shown, the contenders, the sampling
    parameters, and the prompt set; the next pair is on screen at the key press."""
    folder = register_lora(window.data_dir, "v1", bundled_model)
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        window.controller.set_adapter(folder / "adapter.gguf")
    path = prompts_file(tmp_path, PROMPTS[:3])
    view = window.queue_view
    q = queue(qtbot, window, "file", path=path)
    shown = [next_pair(qtbot, view)]
    assert "v1" in view.headers["right"].text() and "base" in view.headers["left"].text()
    press(qtbot, window, Qt.Key.Key_1)
    assert view.progress.text() == "2 of 3"  # at once: before the vote's commit
    shown.append(next_pair(qtbot, view))
    press(qtbot, window, Qt.Key.Key_2)
    shown.append(next_pair(qtbot, view))

    def write():
        dialog = QApplication.activeModalWidget()
        dialog.editor.setPlainText("Hello!")
        dialog.accept()

    QTimer.singleShot(0, write)
    press(qtbot, window, Qt.Key.Key_W)  # write a better answer
    assert view.progress.text() == "All 3 done"
    ops.wait_for_queries()
    qtbot.waitUntil(lambda: len(live_votes(window.data_dir)) == 3, timeout=5_000)
    assert "Recorded 3" in view.status.text()
    votes = live_votes(window.data_dir)
    assert [v["choice"] for v in votes] == ["left", "right", "better"]
    assert votes[2]["better_text"] == "Hello!"
    for vote, texts, prompt in zip(votes, shown, PROMPTS):
        assert {side: vote[side]["text"] for side in SIDES} == texts
        assert vote["prompt"] == prompt and vote["prompt_set"] == str(path.resolve())
        assert (vote["left"]["adapter"], vote["right"]["adapter"]) == (None, "v1")
        assert vote["left"]["params"]["max_tokens"] == 12 and not vote["blind"]
        assert vote["left"]["prompt_messages"] == [{"role": "user", "content": prompt}]
    assert all(item.vote_id is not None for item in q.items)


def test_skip_back_and_undo(qtbot, window, tmp_path):
    view = window.queue_view
    queue(qtbot, window, "file", path=prompts_file(tmp_path, PROMPTS[:3]))
    first = next_pair(qtbot, view)
    press(qtbot, window, Qt.Key.Key_1)
    press(qtbot, window, Qt.Key.Key_S)  # skipped, answered or not
    assert view.progress.text() == "3 of 3"
    press(qtbot, window, Qt.Key.Key_Backspace)  # back to the skipped one
    assert view.progress.text() == "2 of 3"
    press(qtbot, window, Qt.Key.Key_Backspace)  # back to the first: its vote undone
    assert view.progress.text() == "1 of 3" and "vote again" in view.status.text()
    assert next_pair(qtbot, view) == first  # the same pair, not answered again
    ops.wait_for_queries()
    qtbot.waitUntil(lambda: live_votes(window.data_dir) == [], timeout=5_000)
    press(qtbot, window, Qt.Key.Key_3)
    next_pair(qtbot, view)
    press(qtbot, window, Qt.Key.Key_4)
    next_pair(qtbot, view)
    press(qtbot, window, Qt.Key.Key_S)
    ops.wait_for_queries()
    qtbot.waitUntil(lambda: len(live_votes(window.data_dir)) == 2, timeout=5_000)
    with Store.open(window.data_dir) as store:
        all_votes = store.votes(include_deleted=True)
        items = store.queue_items(store.queues()[0]["id"])
    assert [(v["choice"], v["deleted_at"] is not None) for v in all_votes] == \
        [("left", True), ("tie", False), ("both_bad", False)]
    assert [(i["choice"], i["skipped"]) for i in items] == [("tie", False), ("both_bad", False),
                                                            (None, True)]
    assert view.progress.text() == "All 3 done"


def test_blind_order_is_drawn_for_each_pair_and_hidden_until_the_vote(qtbot, window, tmp_path,
                                                                      bundled_model):
    folder = register_lora(window.data_dir, "v1", bundled_model)
    with qtbot.waitSignal(window.controller.engines_changed, timeout=10_000):
        window.controller.set_adapter(folder / "adapter.gguf")
    window.blind_action.setChecked(True)
    window.settings.max_tokens.setValue(4)
    random.seed(3)  # which side is which is drawn: both placements occur in eight
    view = window.queue_view
    queue(qtbot, window, "file", path=prompts_file(tmp_path, [f"Say {n}." for n in range(8)]))
    shown = []
    for _ in range(8):
        shown.append(next_pair(qtbot, view))
        assert all("hidden" in view.headers[side].text() and "v1" not in view.headers[side].text()
                   for side in SIDES)
        press(qtbot, window, Qt.Key.Key_1)
        qtbot.waitUntil(lambda: "v1" in view.status.text(), timeout=5_000)  # named once voted on
    ops.wait_for_queries()
    qtbot.waitUntil(lambda: len(live_votes(window.data_dir)) == 8, timeout=5_000)
    votes = live_votes(window.data_dir)
    assert all(v["blind"] for v in votes)
    assert {v["left"]["adapter"] for v in votes} == {None, "v1"}
    for vote, texts in zip(votes, shown):
        assert {side: vote[side]["text"] for side in SIDES} == texts
        assert {vote["left"]["adapter"], vote["right"]["adapter"]} == {None, "v1"}


KILLED = textwrap.dedent("""
    import argparse, os, signal, sys, time
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication
    from diptych.desktop.app import build_window

    app = QApplication([])
    win = build_window(argparse.Namespace(data_dir=sys.argv[1], model=None, adapter=None))
    win.show()

    def until(done):
        deadline = time.monotonic() + 60
        while not done():
            if time.monotonic() > deadline:
                sys.exit("timed out")
            app.processEvents()
            time.sleep(0.005)

    until(lambda: len(win.controller.engines) == 2)
    win.settings.max_tokens.setValue(48)
    view = win.queue_view
    win.tabs.setCurrentWidget(view)
    view.path.setText(sys.argv[2])
    view.queue_button.click()
    until(lambda: view.controller.queue is not None)
    for _ in range(2):
        until(lambda: view.vote_bar.voting)
        QTest.keyClick(win, Qt.Key.Key_2)
    items = view.controller.queue.items
    until(lambda: items[0].vote_id and items[1].vote_id and items[2].answered
          and view.controller.answering is not None)  # both votes committed, an item answering
    time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_app_reopens_where_it_was_with_its_answers(qtbot, data_dir, tmp_path):
    from helpers import open_window

    path = prompts_file(tmp_path)
    done = subprocess.run([sys.executable, "-c", KILLED, str(data_dir), str(path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == -9, done.stderr[-3000:]
    with Store.open(data_dir) as store:
        [row] = store.queues()
        before = store.queue_items(row["id"])
        n_conversations = len(store.conversations())
    answered = [r for r in before if r["left"] is not None]
    assert [r["choice"] for r in before[:2]] == ["right", "right"] and len(answered) >= 3
    assert len(answered) < len(before)
    assert n_conversations == len(answered)  # the item cut off left nothing half-written
    win = open_window(qtbot, data_dir, max_tokens=48)
    view = win.queue_view
    win.tabs.setCurrentWidget(view)
    qtbot.waitUntil(lambda: view.controller.queue is not None, timeout=10_000)
    assert view.progress.text() == f"3 of {len(PROMPTS)}"
    third = next_pair(qtbot, view)
    assert third == {side: before[2][side]["text"] for side in SIDES}  # not answered again
    press(qtbot, win, Qt.Key.Key_1)
    ops.wait_for_queries()
    qtbot.waitUntil(lambda: len(live_votes(data_dir)) == 3, timeout=5_000)
    with Store.open(data_dir) as store:
        after = store.queue_items(row["id"])
    for was, now in zip(answered, after):  # the answers written before the kill are kept
        assert now["left_response_id"] == was["left_response_id"]
    assert [r["choice"] for r in after[:3]] == ["right", "right", "left"]


def test_a_bad_prompt_file_is_one_line_and_queues_nothing(qtbot, window, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Name a river."}\n{"text": "no prompt here"}\n')
    view = window.queue_view
    window.tabs.setCurrentWidget(view)
    view.source.setCurrentIndex(view.source.findData("file"))
    view.path.setText(str(bad))
    view.queue_button.click()
    qtbot.waitUntil(lambda: view.findChild(QMessageBox, "error-dialog") is not None, timeout=5_000)
    dialog = view.findChild(QMessageBox, "error-dialog")
    assert dialog.text() == f"{bad}:2: 'prompt' must be a string or a list of messages"
    assert view.controller.queue is None
    with Store.open(window.data_dir) as store:
        assert store.queues() == []


def test_the_command_line_answers_a_queue_the_app_opens(qtbot, data_dir, tmp_path, capsys,
                                                        bundled_model):
    from helpers import open_window

    register_lora(data_dir, "v1", bundled_model)
    path = prompts_file(tmp_path, PROMPTS[:2])
    bad = prompts_file(tmp_path, ["   ", ""], name="empty.txt")
    assert main(["--data-dir", str(data_dir), "data", "queue", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"diptych: error: no prompts in {bad.resolve()}\n"
    assert main(["--data-dir", str(data_dir), "data", "queue", str(path), "--count", "2",
                 "--max-tokens", "6", "--seed", "5", "--adapter", "v1"]) == 0
    assert "2 pairs answered" in capsys.readouterr().err
    with Store.open(data_dir) as store:
        [row] = store.queues()
        items = store.queue_items(row["id"])
    assert [(i["left"]["adapter"], i["right"]["adapter"]) for i in items] == [(None, "v1")] * 2
    assert items[0]["left"]["params"]["max_tokens"] == 6 and items[0]["left"]["params"]["seed"] == 5
    win = open_window(qtbot, data_dir, max_tokens=6)
    view = win.queue_view
    win.tabs.setCurrentWidget(view)
    qtbot.waitUntil(lambda: view.controller.queue is not None, timeout=10_000)
    assert next_pair(qtbot, view) == {side: items[0][side]["text"] for side in SIDES}
    assert view.ahead.text() == "2 pairs ready" and view.controller.answering is None
    assert json.loads(json.dumps(items[0]["prompt"])) == [{"role": "user", "content": PROMPTS[0]}]
