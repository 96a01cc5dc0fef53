"""The one base class for errors a user can cause.

A bad file, a bad flag, a busy or damaged store: the user can fix these, so the command
line prints them as one line (exit 2) and the app as one dialog line. Any other exception
is a bug in Diptych and is shown with its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; ``str(error)`` is the whole message, one line."""


EXIT_STATUS = 2  # what a command that met an error the user can fix exits with


def error_line(error: BaseException | str) -> str:
    """The one line every command prints for an error the user can fix (exit status 2)."""
    return f"diptych: error: {one_line(error)}"


def one_line(error: BaseException | str) -> str:
    """The error's message on one line, whatever it holds (a library's message may wrap);
    an OSError as "FILE: what went wrong", not "[Errno 30] ..."."""
    text = str(error)
    if (isinstance(error, OSError) and error.strerror
            and type(error).__str__ is OSError.__str__):  # not one that words its own message
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return " ".join(text.split()) or type(error).__name__
