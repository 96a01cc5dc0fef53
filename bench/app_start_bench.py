"""App start: process start to first window shown, to both models loaded, to first token.

    python bench/app_start_bench.py            (offscreen; or under xvfb-run for a real window)

The reference is a bare PySide6 process that shows an empty QMainWindow, measured in
the same run: the ratio says what Diptych adds on top of Qt itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
marks = {}
if sys.argv[1] == "bare":
    w = QMainWindow(); w.show()
    marks["shown"] = time.perf_counter() - t0
    QTimer.singleShot(0, app.quit)
else:
    import argparse, tempfile
    from diptych.desktop.app import build_window
    w = build_window(argparse.Namespace(data_dir=tempfile.mkdtemp(), model=None, adapter=None))
    w.show()
    marks["shown"] = time.perf_counter() - t0
    c = w.controller
    def ready():
        if len(c.engines) < 2:
            return QTimer.singleShot(10, ready)
        marks["models_loaded"] = time.perf_counter() - t0
        c.answer_delta.connect(first)
        w.prompt.setPlainText("Hello!")
        w.send()
    def first(side, text):
        if "first_token" not in marks:
            marks["first_token"] = time.perf_counter() - t0
            c.stop()
            QTimer.singleShot(200, app.quit)
    QTimer.singleShot(0, ready)
app.exec()
print(json.dumps(marks))
"""


def run(kind: str) -> dict:
    env = {**os.environ}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = subprocess.run([sys.executable, "-c", CHILD, kind], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    bare = [run("bare") for _ in range(3)]
    app = [run("app") for _ in range(3)]
    med = lambda rows, k: sorted(r[k] for r in rows)[1]  # noqa: E731 - median of 3
    print(f"bare Qt window shown        : {med(bare, 'shown'):.2f} s (reference)")
    print(f"Diptych window shown        : {med(app, 'shown'):.2f} s "
          f"(ratio {med(app, 'shown') / med(bare, 'shown'):.1f})")
    print(f"both models loaded          : {med(app, 'models_loaded'):.2f} s")
    print(f"first token after start     : {med(app, 'first_token'):.2f} s")


if __name__ == "__main__":
    main()
