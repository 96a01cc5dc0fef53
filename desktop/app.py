"""Start the desktop app: ``diptych [--model PATH] [--adapter NAME_OR_PATH] [--data-dir DIR]``."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from diptych import paths
from diptych.models import adapters, catalog

from .main_window import MainWindow


def run_app(args) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Diptych")
    window = build_window(args)
    window.show()
    code = app.exec()
    window.controller.stop()
    window.controller.session.close()  # waits for the engines' queues, then frees the models
    return code


def build_window(args) -> MainWindow:
    root = paths.data_dir(getattr(args, "data_dir", None))
    window = MainWindow(root)
    model = getattr(args, "model", None) or catalog.bundled_model_path()
    adapter = None
    if getattr(args, "adapter", None):
        try:
            adapter = adapters.runnable_gguf(adapters.resolve(args.adapter, root))
        except (adapters.AdapterError, FileNotFoundError) as exc:
            window.statusBar().showMessage(f"Adapter not used: {exc}")
    window.open_model(model, adapter=adapter)
    return window
