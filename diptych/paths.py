"""Where Diptych keeps its data: one folder holding the database and the adapters.

Order of precedence: an explicit directory (``--data-dir``), then ``DIPTYCH_HOME``,
then the platform's user data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

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


def adapters_dir(root: str | os.PathLike | None = None) -> Path:
    path = data_dir(root) / "adapters"
    path.mkdir(parents=True, exist_ok=True)
    return path
