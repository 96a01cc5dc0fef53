"""UI responsiveness: how long the window's event loop stalls while the panes stream and a job trains.

    python bench/ui_stall_bench.py [--seconds 15] [--steps 6] [--max-tokens 256] [--json FILE]

Quick check: ``python bench/ui_stall_bench.py --seconds 3 --steps 1``. Offscreen unless
``QT_QPA_PLATFORM`` says otherwise (under ``xvfb-run`` for a real X11 window). Set
``DIPTYCH_CACHE`` to a filled weights cache, or the first job also pays the one-time
GGUF conversion (about 45 s; the stalls it causes are still real ones).

The real window (``diptych.desktop.app.build_window``, shown, both models loaded) gets a
probe: a precise ``QTimer`` every 10 ms on the UI thread, recording when each tick
arrives. A stall is the time between two ticks beyond those 10 ms: how long a click or
a keypress would have waited. Scenarios, one after the other in one process:

- idle (the reference): nothing happens for ``--seconds``;
- stream: both panes stream answers (``--max-tokens``) for ``--seconds``, one prompt
  after another, each in a new conversation, sent through the window as a user does
  (text in the prompt box, ``MainWindow.send``); the Chat tab is shown;
- train: a DPO job started from the Train tab (its Start button; ``--steps N
  --batch-size 2 --max-length 64 --eval-size 2``) on 8 votes recorded beforehand
  through the Store, measured until the job ends; the Train tab is shown, plotting;
- stream + train: the same job while both panes keep streaming, the Chat tab shown.

Per scenario: ticks, the longest stall, the 99th and 50th percentile stall (ms), how
many stalls passed 50 and 100 ms, and the ratios of the longest and p99 tick interval
(10 ms included) against idle, and of stream + train against streaming alone.

Defaults take about 5 minutes on two CPU cores (two jobs of about 1.5 minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by the job process
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from training_bench import PAIRS  # noqa: E402 - a sibling script: bench/ is on sys.path

INTERVAL_MS = 10
PROMPTS = ["Write a long story about a lighthouse keeper.", "What is the capital of France?",
           "Tell me how to boil an egg.", "Describe the weather in spring."]
VOTES = PAIRS[:8]  # a direct answer preferred to a question asked back


class Probe:
    """A 10 ms timer on the UI thread; the gaps between its ticks show the stalls."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.ticks: list[float] = []

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        intervals = np.diff(self.ticks) * 1000
        stalls = np.clip(intervals - INTERVAL_MS, 0, None)
        return {"seconds": self.ticks[-1] - self.ticks[0], "ticks": len(intervals),
                "longest_ms": float(stalls.max()), "p99_ms": float(np.percentile(stalls, 99)),
                "p50_ms": float(np.percentile(stalls, 50)),
                "over_50ms": int((stalls > 50).sum()), "over_100ms": int((stalls > 100).sum()),
                "longest_interval_ms": float(intervals.max()),
                "p99_interval_ms": float(np.percentile(intervals, 99))}


def run_until(done, timeout: float) -> bool:
    """Run the event loop until ``done()`` or ``timeout`` seconds; returns ``done()``."""
    loop = QEventLoop()
    deadline = time.monotonic() + timeout
    check = QTimer()
    check.setInterval(50)
    check.timeout.connect(lambda: (done() or time.monotonic() > deadline) and loop.quit())
    check.start()
    if not done():
        loop.exec()
    check.stop()
    return done()


def record_votes(data_dir: Path) -> None:
    from diptych.training.store import Store

    with Store.open(data_dir) as store:
        for question, answer, asked_back in VOTES:
            conversation = store.new_conversation()
            store.add_user_message(conversation, 0, question)
            shown = dict(model="gemma", model_path=None, model_hash=None, adapter_path=None,
                         adapter_scale=None, template_name="gemma", template_source=None,
                         params={}, prompt_messages=[{"role": "user", "content": question}],
                         n_tokens=None, ttft_s=None, tokens_per_s=None, finish_reason="stop")
            left = store.add_response(conversation, 0, "left", "base", asked_back, adapter=None, **shown)
            right = store.add_response(conversation, 0, "right", "tuned", answer, adapter="t", **shown)
            store.record_vote(left, right, "right", blind=True)


class Streamer:
    """Keeps both panes streaming: a new conversation and a new prompt whenever they finish."""

    def __init__(self, window):
        self.window, self.on, self.sent = window, False, 0
        window.controller.busy_changed.connect(self._busy)

    def start(self) -> None:
        self.on = True
        self._send()

    def stop(self) -> None:
        self.on = False
        self.window.controller.stop()
        run_until(lambda: not self.window.controller.busy, 60)

    def _busy(self, busy: bool) -> None:
        if not busy and self.on:
            QTimer.singleShot(0, self._send)

    def _send(self) -> None:
        if not self.on:
            return
        self.window.controller.new_conversation()
        self.window.prompt.setPlainText(PROMPTS[self.sent % len(PROMPTS)])
        self.window.send()
        self.sent += 1


def start_job(window, name: str, steps: int) -> None:
    panel = window.training
    panel.kind.setCurrentIndex(panel.kind.findData("dpo"))
    panel.name.setText(name)
    panel.extra.setText(f"--steps {steps} --batch-size 2 --max-length 64 --eval-size 2")
    panel.start_button.click()
    if not panel.running:
        raise SystemExit("the training job did not start")


def finish_job(window, timeout: float) -> dict:
    panel = window.training
    if not run_until(lambda: not panel.running, timeout):
        panel.cancel()
        raise SystemExit("the training job did not finish in time")
    line = panel.last_line or {}
    if line.get("phase") != "done":
        raise SystemExit(f"the training job failed: {line}\n{panel.log.toPlainText()[-2000:]}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="length of idle and stream")
    parser.add_argument("--steps", type=int, default=6, help="DPO steps of each job")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per streamed answer")
    parser.add_argument("--job-timeout", type=float, default=900)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    from diptych.desktop.app import build_window

    app = QApplication.instance() or QApplication(sys.argv[:1])
    results = {}
    with tempfile.TemporaryDirectory(prefix="diptych-stall-") as tmp:
        record_votes(Path(tmp))
        window = build_window(argparse.Namespace(data_dir=tmp, model=None, adapter=None))
        window.show()
        if not run_until(lambda: len(window.controller.engines) == 2, 120):
            raise SystemExit("the models did not load")
        window.settings.max_tokens.setValue(args.max_tokens)
        streamer, probe = Streamer(window), Probe()
        chat_tab = 0
        train_tab = next(i for i in range(window.tabs.count())
                         if window.tabs.widget(i).isAncestorOf(window.training))
        run_until(lambda: False, 1.0)  # let start-up settle

        print("idle", file=sys.stderr, flush=True)
        probe.start()
        run_until(lambda: False, args.seconds)
        results["idle"] = probe.stop()

        print("stream", file=sys.stderr, flush=True)
        window.tabs.setCurrentIndex(chat_tab)
        probe.start()
        streamer.start()
        run_until(lambda: False, args.seconds)
        results["stream"] = probe.stop()
        results["stream"]["answers"] = streamer.sent
        streamer.stop()

        print("train", file=sys.stderr, flush=True)
        window.tabs.setCurrentIndex(train_tab)
        probe.start()
        start_job(window, "stall-train", args.steps)
        done = finish_job(window, args.job_timeout)
        results["train"] = probe.stop()
        results["train"]["job_s_per_step"] = done["metrics"]["train"]["s_per_step"]

        print("stream + train", file=sys.stderr, flush=True)
        window.tabs.setCurrentIndex(chat_tab)
        probe.start()
        start_job(window, "stall-both", args.steps)
        streamer.start()
        done = finish_job(window, args.job_timeout)
        results["stream + train"] = probe.stop()
        results["stream + train"]["answers"] = streamer.sent
        results["stream + train"]["job_s_per_step"] = done["metrics"]["train"]["s_per_step"]
        streamer.stop()
        window.close()
        window.controller.session.store = None
        if window.store is not None:
            window.store.close()

    idle = results["idle"]
    print(f"UI-thread probe every {INTERVAL_MS} ms, {app.platformName()} platform, "
          f"answers of up to {args.max_tokens} tokens, jobs of {args.steps} DPO steps")
    print(f"{'scenario':16s} {'seconds':>7s} {'ticks':>6s} {'longest':>8s} {'p99':>7s} {'p50':>6s} "
          f"{'>50ms':>6s} {'>100ms':>6s}   stall ms; ratio vs idle of longest / p99 tick interval")
    for name, r in results.items():
        print(f"{name:16s} {r['seconds']:7.1f} {r['ticks']:6d} {r['longest_ms']:8.1f} "
              f"{r['p99_ms']:7.1f} {r['p50_ms']:6.2f} {r['over_50ms']:6d} {r['over_100ms']:6d}   "
              f"{r['longest_interval_ms'] / idle['longest_interval_ms']:6.1f} / "
              f"{r['p99_interval_ms'] / idle['p99_interval_ms']:.2f}")
    both, stream = results["stream + train"], results["stream"]
    print(f"stream + train against stream alone: longest "
          f"{both['longest_interval_ms'] / stream['longest_interval_ms']:.2f}, "
          f"p99 {both['p99_interval_ms'] / stream['p99_interval_ms']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
