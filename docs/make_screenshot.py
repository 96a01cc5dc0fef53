"""Make the README's screenshots from the real app: a real prompt, both panes answering.

Run under a (virtual) display, e.g.
    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/screenshot.png
    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/delta.png \
        --data-dir DIR --adapter NAME --seed 4 --delta \
        --prompt "What is the capital of Canada?"
    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/stats.png \
        --data-dir DIR --tab Stats

    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/grpo.png \
        --reward-fn examples/rewards/format_length.py:short_statement --grpo "--steps 14 --eval-every 3"
    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/skill.png \
        --kind skill --grpo "--task arith --steps 12 --eval-every 4" --evals 5
    xvfb-run -a -s "-screen 0 1280x800x24" python docs/make_screenshot.py docs/queue.png \
        --queue examples/prompts/questions.txt

``--grpo OPTIONS`` starts a real GRPO job (``--kind skill``: a skill job) from the Train tab
with those options (``--task T`` picked in the Data picker) and takes the shot once the job has reported its held-out evaluation
``--evals`` times.
``--queue FILE`` queues ``--count`` prompts of FILE from the Queue tab, votes Left (as key 1
does) on the first pair, and takes the shot once the second is on screen and ``--ready`` pairs
wait (the place, "2 of N", and what the queue answers ahead show at the top).
``--delta`` turns on "Δ vs base" in both panes once they have answered and hovers the
token the adapter moved most, so the shot includes its tooltip (the whole screen is
grabbed: a tooltip is a window of its own).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from PySide6.QtCore import QPoint, QTimer
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QToolTip

from diptych.desktop import token_view
from diptych.desktop.app import build_window

PROMPT = "What is the capital of France?"


def token_position(pane, index: int) -> QPoint:
    """Where token ``index`` of a scored answer is drawn, in global coordinates."""
    browser = pane.transcript
    block = browser.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.charFormat().anchorHref() == f"tok:{index}":
                cursor = QTextCursor(browser.document())
                cursor.setPosition(fragment.position())
                browser.setTextCursor(cursor)
                browser.ensureCursorVisible()
                rect = browser.cursorRect(cursor)
                return browser.viewport().mapToGlobal(rect.center() + QPoint(4, 0))
            it += 1
        block = block.next()
    raise LookupError(f"token {index} is not shown")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/screenshot.png")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--adapter", default=None, help="the right pane's adapter")
    parser.add_argument("--left-adapter", default=None, help="the left pane's adapter (default: the base)")
    parser.add_argument("--seed", type=int, default=None, help="fixed seed for both panes")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--delta", action="store_true", help="show Δ vs base in both panes")
    parser.add_argument("--tab", default=None, help="show this tab instead of the chat")
    parser.add_argument("--grpo", default=None, metavar="OPTIONS", help="run a GRPO job with these options")
    parser.add_argument("--evals", type=int, default=4, help="--grpo: shoot after this many evaluations")
    parser.add_argument("--reward-fn", default=None, help="--grpo: the Reward function field")
    parser.add_argument("--kind", default="grpo", help="--grpo: the job kind (grpo or skill)")
    parser.add_argument("--queue", default=None, metavar="FILE", help="show the Queue tab voting through FILE")
    parser.add_argument("--count", type=int, default=20, help="--queue: how many prompts to queue")
    parser.add_argument("--ready", type=int, default=3, help="--queue: shoot once this many pairs wait")
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    data_dir = args.data_dir or tempfile.mkdtemp()
    window = build_window(argparse.Namespace(data_dir=data_dir, model=None, adapter=args.adapter))
    window.resize(1280, 800)
    window.move(0, 0)
    window.show()
    window.settings.max_tokens.setValue(80)
    if args.seed is not None:
        window.settings.fixed_seed.setChecked(True)
        window.settings.seed.setValue(args.seed)
    scored = set()
    left_adapter = [args.left_adapter]

    def ask():
        if len(window.controller.engines) < 2:
            QTimer.singleShot(200, ask)
            return
        if left_adapter and left_adapter[0]:  # any two contenders: an adapter in the left pane too
            from diptych.models import adapters

            path = adapters.runnable_gguf(adapters.resolve(left_adapter.pop(), data_dir))
            window.controller.set_adapter(path, slot="left",
                                          on_done=lambda _s: QTimer.singleShot(300, ask))
            return
        if args.grpo:
            names = [window.tabs.tabText(i) for i in range(window.tabs.count())]
            window.tabs.setCurrentIndex(next(i for i, n in enumerate(names) if "Train" in n))
            panel = window.training
            panel.kind.setCurrentIndex(panel.kind.findData(args.kind))
            panel.name.setText("short-answers" if args.kind == "grpo" else "sums")
            options = args.grpo.split()
            if "--task" in options:  # the task goes in the Data picker, as a user would pick it
                at = options.index("--task")
                panel.source.setCurrentIndex(panel.source.findData(f"task:{options[at + 1]}"))
                del options[at:at + 2]
            panel.extra.setText(" ".join(options))
            window.settings_dock.hide()  # the chat's settings take room the plots need
            if args.reward_fn:
                panel.reward_fn.setText(args.reward_fn)
            panel.start()
            QTimer.singleShot(1000, lambda: wait_for_evals(panel))
            return
        if args.queue:
            start_queue()
            return
        if args.tab:
            names = [window.tabs.tabText(i) for i in range(window.tabs.count())]
            window.tabs.setCurrentIndex(names.index(args.tab))
            QTimer.singleShot(1500, shoot)
            return
        window.prompt.setPlainText(args.prompt)
        window.send()
        window.controller.busy_changed.connect(lambda busy: busy or QTimer.singleShot(500, answered))

    def start_queue():
        view = window.queue_view
        window.tabs.setCurrentWidget(view)
        window.settings_dock.hide()  # the two answers side by side take the room
        view.source.setCurrentIndex(view.source.findData("file"))
        view.path.setText(args.queue)
        view.count.setValue(args.count)
        view.queue_button.click()
        QTimer.singleShot(500, lambda: wait_for_pair(view, 0))

    def wait_for_pair(view, position):
        queue = view.controller.queue
        item = queue.current if queue is not None else None
        if item is None or item.position != position or not view.vote_bar.voting:
            QTimer.singleShot(200, lambda: wait_for_pair(view, position))
        elif position == 0:
            window.vote("left")  # what key 1 does: one vote, so the status line shows one recorded
            QTimer.singleShot(200, lambda: wait_for_pair(view, 1))
        elif queue.ready < min(args.ready, len(queue.items) - 1) or queue.items[0].vote_id is None:
            QTimer.singleShot(200, lambda: wait_for_pair(view, position))
        else:
            QTimer.singleShot(300, shoot)

    def wait_for_evals(panel):
        if len(panel.history.get("held_out", [])) >= args.evals or not panel.running:
            QTimer.singleShot(500, shoot)
        else:
            QTimer.singleShot(1000, lambda: wait_for_evals(panel))

    def answered():
        if not args.delta:
            shoot()
            return
        window.controller.scores_ready.connect(on_scores)
        for pane in window.panes.values():
            pane.scores_button.setChecked(True)

    def on_scores(side, _comparison):
        scored.add(side)
        if scored == set(window.panes):
            QTimer.singleShot(300, hover)

    def hover():
        pane = window.panes["right"]
        comparison = pane.comparison
        index = comparison.summary.max_index
        QToolTip.showText(token_position(pane, index), token_view.tooltip_html(comparison, index),
                          pane.transcript)
        QTimer.singleShot(500, shoot)

    def shoot():
        if args.delta:
            image = app.primaryScreen().grabWindow(0, 0, 0, window.width(), window.height())
        else:
            image = window.grab()
        image.save(args.out)
        print(f"wrote {args.out}")
        app.quit()

    QTimer.singleShot(300, ask)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
