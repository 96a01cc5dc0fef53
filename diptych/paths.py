"""Where Diptych keeps its data: one folder holding the database and the adapters.

Order of precedence: an explicit directory (``--data-dir``), then ``DIPTYCH_HOME``,
then the platform's user data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from diptych.errors import UserError

ENV_VAR = "DIPTYCH_HOME"
DB_NAME = "diptych.sqlite"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        path = Path(explicit)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = Path(platformdirs.user_data_dir("diptych", appauthor=False))
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(root: str | os.PathLike | None = None) -> Path:
    return data_dir(root) / DB_NAME


class DataDirError(UserError, OSError):
    """A data folder that cannot be written (read-only, not ours): one line, not an errno."""

    def __str__(self) -> str:
        return self.strerror


def adapters_dir(root: str | os.PathLike | None = None) -> Path:
    path = data_dir(root) / "adapters"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(exc.errno, f"{path}: the adapters folder cannot be made "
                           f"({exc.strerror or exc})") from None
    return path
