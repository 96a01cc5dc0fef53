"""The errors a user can cause, as the models (and everything above them) import them.

They live in ``diptych/errors.py``, beside ``diptych/paths.py``, which raises one too: so
``diptych.paths`` needs nothing of ``diptych.models`` while the models use the paths.
"""

from diptych.errors import EXIT_STATUS, UserError, error_line, one_line  # noqa: F401
