"""Make the README's screenshot: the real app, a real prompt, both panes answering.

Run under a (virtual) display:  xvfb-run -a python docs/make_screenshot.py [OUT.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from diptych.desktop.app import build_window

PROMPT = "What is the capital of France?"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/screenshot.png")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--seed", type=int, default=None, help="fixed seed for both panes")
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    data_dir = args.data_dir or tempfile.mkdtemp()
    window = build_window(argparse.Namespace(data_dir=data_dir, model=None, adapter=args.adapter))
    window.resize(1400, 820)
    window.show()
    window.settings.max_tokens.setValue(80)
    if args.seed is not None:
        window.settings.fixed_seed.setChecked(True)
        window.settings.seed.setValue(args.seed)

    def ask():
        if len(window.controller.engines) < 2:
            QTimer.singleShot(200, ask)
            return
        window.prompt.setPlainText(PROMPT)
        window.send()
        window.controller.busy_changed.connect(lambda busy: busy or QTimer.singleShot(500, shoot))

    def shoot():
        window.grab().save(args.out)
        print(f"wrote {args.out}")
        app.quit()

    QTimer.singleShot(300, ask)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
