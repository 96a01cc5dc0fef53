"""The training package's error for bad input to a job, apart from the runner (``job.py``)
so that the modules the runner itself imports (``parent.py``) can raise it too."""

from __future__ import annotations

from diptych.models.errors import UserError


class JobError(UserError):
    """Bad input to a job: reported as one line, exit code 2."""
