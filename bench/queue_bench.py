"""Vote queue: votes per minute from the Queue tab against the panes, the wait after each
key, and the UI stall while the queue answers in the background.

    python bench/queue_bench.py [--pairs 20] [--max-tokens 64] [--read-s 3] [--typing-s 5]
                                [--prompts FILE] [--json FILE]

Quick check: ``python bench/queue_bench.py --quick`` (4 pairs, 1 s of reading). Offscreen
unless ``QT_QPA_PLATFORM`` says otherwise. Defaults take about 5 minutes on two CPU cores.

The real window (``diptych.desktop.app.build_window``, shown, the bundled model in both
panes, base against base) on an empty data folder, answers of ``--max-tokens`` tokens
with one fixed seed for every answer, so the panes and the queue write the same answers
to the same prompts (the first ``--pairs`` of ``--prompts``, in order). A scripted
person drives it with key presses (``QTest.keyClick``, as the tests' pytest-qt does),
cycling through the votes 1-4, in four runs, one after the other:

- panes, voting at once (the reference): for each prompt, Ctrl+N (a new conversation),
  the prompt put in the prompt box, Ctrl+Enter, wait until both answers have streamed
  and the vote bar offers the vote, then the key, then wait for "Recorded" (the vote's
  commit, a few ms: a Ctrl+N before it leaves the next conversation without a vote);
- panes, reading first: the same, with ``--read-s`` seconds between the vote being
  offered and the key;
- queue, voting at once: the prompts queued from the Queue tab (its source, path, count
  and button), then a key as soon as a pair is on screen;
- queue, reading first: a new queue of the same prompts, a key ``--read-s`` seconds after
  each pair is on screen.

The reference leaves out the person's typing: the prompt appears in the box at once.
Typing is what the queue saves besides waiting, so a second figure for each panes run
adds a fixed, stated allowance of ``--typing-s`` seconds a prompt (not measured: added to
the measured time). Votes per minute: votes over the time from the first prompt sent (the
panes) or the Queue button (the queue) to the last key.

The wait after a key: from just before the key press to the next pair on screen (the
view holding its answers and the event loop past the repaint it queued). The first
pair's wait in a queue run is from the Queue button. A queue answers up to ``AHEAD`` (4)
pairs ahead of the person, as fast as the models write them; a person who votes faster
than that is never ahead of the models' answers and waits for each pair, so the waits are
also given for the keys pressed while the next pair was already answered.

The UI stall: ui_stall_bench's probe (a 10 ms timer on the UI thread; a stall is the time
between two ticks beyond those 10 ms) during each run, against an idle reference of
``--idle-s`` seconds. While the person reads, the queue answers in the background: the
"queue, reading first" row is that case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ui_stall_bench import INTERVAL_MS, Probe, run_until  # noqa: E402 - a sibling script; sets offscreen

from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "examples" / "prompts" / "questions.txt"
KEYS = [Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3, Qt.Key.Key_4]  # left, right, tie, both bad
WAIT_TARGET_MS = 100
STALL_TARGET_MS = 50
SEED = 7


def wait_for(done, signals, timeout: float) -> bool:
    """Run the event loop until ``done()``, checked whenever one of ``signals`` fires (so
    the check costs nothing between them) and every 50 ms as a fallback."""
    if done():
        return True
    loop = QEventLoop()
    deadline = time.monotonic() + timeout

    def check(*_):
        if done() or time.monotonic() > deadline:
            loop.quit()

    for signal in signals:
        signal.connect(check)
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    for signal in signals:
        signal.disconnect(check)
    return done()


def pause(seconds: float) -> None:
    """The person reading: the event loop runs, nothing is pressed."""
    run_until(lambda: False, seconds)


def load_prompts(path: Path, n: int, tmp: Path) -> tuple[list[str], Path]:
    """The first ``n`` prompts of ``path`` (cycled if it has fewer), and a file of them."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path}: no prompts")
    prompts = [lines[i % len(lines)] for i in range(n)]
    out = tmp / "prompts.txt"
    out.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return prompts, out


def panes_run(window, prompts: list[str], read_s: float, timeout: float) -> dict:
    """Each vote as the panes take it: new conversation, prompt, send, both answers, vote."""
    window.tabs.setCurrentIndex(0)
    c, box = window.controller, window.prompt
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        QTest.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
        if c.session.conversation.turns:
            raise SystemExit(f"Ctrl+N did not start a new conversation before prompt {i + 1}")
        box.setFocus()
        box.setPlainText(prompt)
        QTest.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        if not c.busy:
            raise SystemExit(f"the panes did not start on prompt {i + 1}")
        if not wait_for(lambda: window.vote_bar.voting, [c.turn_complete, c.busy_changed], timeout):
            raise SystemExit(f"the panes did not offer a vote on prompt {i + 1}")
        if read_s:
            pause(read_s)
        voted = []

        def on_recorded(*_):
            voted.append(1)

        c.vote_recorded.connect(on_recorded)
        QTest.keyClick(box, KEYS[i % 4])
        if window.vote_bar.voting:
            raise SystemExit(f"the key did not vote on prompt {i + 1}")
        # "Recorded" before Ctrl+N: a vote still being committed when the conversation is
        # replaced marks the new one as voted, and it offers no vote.
        if not wait_for(lambda: voted, [c.vote_recorded], 30):
            raise SystemExit(f"the vote on prompt {i + 1} was not recorded")
        c.vote_recorded.disconnect(on_recorded)
    return {"votes": len(prompts), "seconds": time.perf_counter() - start}


def queue_run(window, prompts_file: Path, n: int, read_s: float, timeout: float) -> dict:
    """Queue the prompts from the Queue tab, then vote through them with the keys."""
    view = window.queue_view
    c = view.controller
    window.tabs.setCurrentWidget(view)
    view.source.setCurrentIndex(view.source.findData("file"))
    view.path.setText(str(prompts_file))
    view.count.setValue(n)
    before = c.queue
    start = time.perf_counter()
    view.queue_button.click()
    if not wait_for(lambda: c.queue is not before, [c.opened], 30):
        raise SystemExit("the prompt set was not queued")
    queue = c.queue

    def on_screen(position: int) -> bool:
        item = queue.current
        return (item is not None and item.position == position and item.answered
                and view.vote_bar.voting
                and view.answer_views["left"].toPlainText() == item.texts["left"])

    waits, ahead, pressed = [], [], start
    for i in range(n):
        if not wait_for(lambda: on_screen(i), [c.changed], timeout):
            raise SystemExit(f"pair {i + 1} was not on screen after {timeout:g} s: "
                             f"{view.status.text() or view.ahead.text()}")
        QApplication.processEvents()  # the repaint the new pair queued: now it is on screen
        waits.append((time.perf_counter() - pressed) * 1000)
        if read_s:
            pause(read_s)
        if i + 1 < n:  # was the queue ahead: the next pair answered before the key?
            ahead.append(queue.items[i + 1].answered)
        pressed = time.perf_counter()
        QTest.keyClick(window, KEYS[i % 4])
        if queue.position != i + 1:
            raise SystemExit(f"the key did not vote on pair {i + 1}")
    seconds = time.perf_counter() - start
    if not wait_for(lambda: all(item.vote_id for item in queue.items), [view.controller.recorded], 30):
        raise SystemExit("the queue's votes were not all committed")
    return {"votes": n, "seconds": seconds, "first_pair_ms": waits[0], "waits_ms": waits[1:],
            "ahead": ahead}


def summary(waits: list[float]) -> dict:
    return {"median_ms": statistics.median(waits) if waits else 0.0,
            "max_ms": max(waits, default=0.0),
            "over_100ms": sum(w > WAIT_TARGET_MS for w in waits), "keys": len(waits)}


def answer_lengths(data_dir: Path, n: int) -> list[dict]:
    """Per run (in the order they ran: n votes each), the answers' mean length in tokens
    and how many the token limit cut: the work each run's models did."""
    from diptych.training.store import Store

    with Store.open(data_dir) as store:
        votes = store.votes()
    runs = []
    for r in range(len(votes) // n):
        answers = [v[side] for v in votes[r * n:(r + 1) * n] for side in ("left", "right")]
        runs.append({"mean_tokens": statistics.mean(a.get("n_tokens") or 0 for a in answers),
                     "cut": sum(a.get("finish_reason") == "length" for a in answers),
                     "answers": len(answers)})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="votes in each run (default 20)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--read-s", type=float, default=3.0,
                        help="the reading person's seconds from a pair to the key (default 3)")
    parser.add_argument("--typing-s", type=float, default=5.0,
                        help="typing allowance added to each panes vote, not measured (default 5)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle reference of the stall probe")
    parser.add_argument("--prompts", type=Path, default=PROMPTS, help="one prompt a line")
    parser.add_argument("--quick", action="store_true",
                        help="a quick check: 4 pairs, 1 s of reading, 1 s idle")
    parser.add_argument("--timeout", type=float, default=60, help="longest wait for one pair")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.read_s, args.idle_s = 4, 1.0, 1.0
    if args.pairs < 2:
        parser.error("--pairs must be 2 or more")
    from diptych.desktop.app import build_window

    app = QApplication.instance() or QApplication(sys.argv[:1])
    runs, stalls = {}, {}
    with tempfile.TemporaryDirectory(prefix="diptych-queue-") as tmp:
        prompts, prompts_file = load_prompts(args.prompts, args.pairs, Path(tmp))
        data_dir = Path(tmp) / "data"
        window = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
        window.resize(1280, 800)
        window.show()
        if not run_until(lambda: len(window.controller.engines) == 2, 120):
            raise SystemExit("the models did not load")
        window.settings.max_tokens.setValue(args.max_tokens)
        window.settings.fixed_seed.setChecked(True)
        window.settings.seed.setValue(SEED)
        pause(1.0)  # let start-up settle
        probe = Probe()

        print("idle", file=sys.stderr, flush=True)
        probe.start()
        pause(args.idle_s)
        stalls["idle"] = probe.stop()
        for name, run in [
            ("panes, voting at once", lambda: panes_run(window, prompts, 0, args.timeout)),
            ("panes, reading first", lambda: panes_run(window, prompts, args.read_s, args.timeout)),
            ("queue, voting at once", lambda: queue_run(window, prompts_file, args.pairs, 0, args.timeout)),
            ("queue, reading first",
             lambda: queue_run(window, prompts_file, args.pairs, args.read_s, args.timeout)),
        ]:
            print(name, file=sys.stderr, flush=True)
            probe.start()
            runs[name] = run()
            stalls[name] = probe.stop()
            pause(0.5)  # the last vote's commit
        window.close()
        window.controller.session.store = None
        if window.store is not None:
            window.store.close()
        lengths = answer_lengths(data_dir, args.pairs)

    for name, run in runs.items():
        run["votes_per_min"] = run["votes"] / run["seconds"] * 60
        if name.startswith("panes"):
            typed = run["seconds"] + args.typing_s * run["votes"]
            run["votes_per_min_with_typing"] = run["votes"] / typed * 60
        else:
            run["wait"] = summary(run["waits_ms"])
            run["wait_ahead"] = summary([w for w, a in zip(run["waits_ms"], run["ahead"]) if a])
    for name, length in zip(runs, lengths):
        runs[name]["answers"] = length

    print(f"{args.pairs} votes a run, answers of up to {args.max_tokens} tokens (seed {SEED}: "
          f"the same answers in every run), {app.platformName()} platform, "
          f"reading person: {args.read_s:g} s from a pair to the key")
    print("The panes' figures leave out typing (the prompt appears in the box at once); "
          f"'+ typing' adds a fixed {args.typing_s:g} s a prompt, not measured.")
    print(f"{'run':24s} {'votes/min':>9s} {'+ typing':>9s} {'vs panes':>8s} {'mean tok':>8s}")
    reference = {"at once": runs["panes, voting at once"], "reading": runs["panes, reading first"]}
    for name, run in runs.items():
        ref = reference["at once" if "at once" in name else "reading"]
        typing = f"{run['votes_per_min_with_typing']:9.1f}" if "votes_per_min_with_typing" in run else f"{'':9s}"
        ratio = "" if run is ref else f"{run['votes_per_min'] / ref['votes_per_min']:8.2f}"
        ratio_typed = ("" if run is ref else
                       f"  ({run['votes_per_min'] / ref['votes_per_min_with_typing']:.2f} vs + typing)")
        tokens = f"{run['answers']['mean_tokens']:8.1f}" if "answers" in run else ""
        print(f"{name:24s} {run['votes_per_min']:9.1f} {typing} {ratio:>8s} {tokens}{ratio_typed}")
    print(f"\nwait after a key until the next pair is on screen (target < {WAIT_TARGET_MS} ms)")
    print("'ahead': the keys pressed with the next pair already answered, and their waits")
    print(f"{'run':24s} {'first pair':>10s} {'median':>8s} {'max':>8s} {'>100 ms':>8s} {'keys':>5s}"
          f" {'ahead':>6s} {'its max':>8s} {'>100 ms':>8s}")
    for name, run in runs.items():
        if "wait" in run:
            w, a = run["wait"], run["wait_ahead"]
            print(f"{name:24s} {run['first_pair_ms']:8.0f}ms {w['median_ms']:6.1f}ms "
                  f"{w['max_ms']:6.1f}ms {w['over_100ms']:8d} {w['keys']:5d} {a['keys']:6d} "
                  f"{a['max_ms']:6.1f}ms {a['over_100ms']:8d}")
    print(f"\nUI stall, probe every {INTERVAL_MS} ms (target <= {STALL_TARGET_MS} ms while the queue answers)")
    print(f"{'run':24s} {'seconds':>7s} {'longest':>8s} {'p99':>7s} {'p50':>6s} {'>50ms':>6s} "
          f"{'>100ms':>6s} {'vs idle':>7s}")
    idle = stalls["idle"]
    for name, r in stalls.items():
        print(f"{name:24s} {r['seconds']:7.1f} {r['longest_ms']:8.1f} {r['p99_ms']:7.1f} "
              f"{r['p50_ms']:6.2f} {r['over_50ms']:6d} {r['over_100ms']:6d} "
              f"{r['longest_interval_ms'] / idle['longest_interval_ms']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                               "runs": runs, "stalls": stalls}, indent=2),
                                   encoding="utf-8")


if __name__ == "__main__":
    main()
