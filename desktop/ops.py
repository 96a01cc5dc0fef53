"""Operations on the session, run off the UI thread (Anki's ``CollectionOp``).

``run_op(parent, op, success)`` runs ``op()`` in a worker thread. When it returns, the
result goes to ``success`` on the UI thread, and a ``Changes`` it returns (or holds as
``.changes``) is announced once through ``hub().changed``: each view redraws only for
the flags it shows. When it raises, the user is told by default: a ``UserError`` as one
dialog line, anything else as a bug with its traceback on stderr; ``failure`` replaces
that. The small functions below are the operations the window offers.
"""

from __future__ import annotations

import traceback
from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from diptych.models import adapters as registry
from diptych.models.errors import UserError
from diptych.models.session import Changes, Contender, Session

from .workers import run_op as _run_in_thread


class Hub(QObject):
    changed = Signal(object)  # Changes


_hub: Hub | None = None


def hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub()
    return _hub


def message(exc: BaseException) -> str:
    """One line for the user: the error's own words for a UserError, else what went wrong."""
    if isinstance(exc, UserError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (this is a bug in Diptych)"
    return " ".join(text.split()) or type(exc).__name__


def show_failure(parent: QWidget | None, exc: BaseException, title: str = "Could not do that"):
    if not isinstance(exc, UserError):
        traceback.print_exception(exc)
    box = QMessageBox(QMessageBox.Icon.Warning, title, message(exc), parent=parent)
    box.setObjectName("error-dialog")
    box.open()
    return box


def run_op(parent: QObject, op: Callable[[], object],
           success: Callable[[object], None] | None = None,
           failure: Callable[[BaseException], None] | None = None, title: str = "Could not do that"):
    def done(result):
        changes = result if isinstance(result, Changes) else getattr(result, "changes", None)
        if success is not None:
            success(result)
        if changes:
            hub().changed.emit(changes)

    def failed(exc):
        if failure is not None:
            failure(exc)
        else:
            show_failure(parent if isinstance(parent, QWidget) else None, exc, title)

    return _run_in_thread(op, done, failed, parent)


# -- the operations -------------------------------------------------------------------

def vote(parent, session: Session, choice: str, better_text: str | None = None, **kw):
    return run_op(parent, lambda: session.vote(choice, better_text), **kw)


def retry_vote(parent, session: Session, **kw):
    return run_op(parent, session.retry_vote, **kw)


def undo_vote(parent, session: Session, **kw):
    return run_op(parent, session.undo_vote, **kw)


def score(parent, session: Session, side: str, **kw):
    return run_op(parent, lambda: session.score(side), title="Not scored", **kw)


def load_model(parent, session: Session, path, **kw):
    return run_op(parent, lambda: session.load(path), title="Could not open the model", **kw)


def use_contender(parent, session: Session, slot: str, contender: Contender, **kw):
    return run_op(parent, lambda: session.set_contender(slot, contender),
                  title="Could not use the adapter", **kw)


def rename_adapter(parent, root, name: str, new_name: str, **kw):
    def op():
        registry.rename(name, new_name, root)
        return Changes(adapters=True)
    return run_op(parent, op, title="Could not rename the adapter", **kw)


def delete_adapter(parent, root, name: str, **kw):
    def op():
        registry.delete(name, root)
        return Changes(adapters=True)
    return run_op(parent, op, title="Could not delete the adapter", **kw)
