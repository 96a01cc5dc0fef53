"""Subcommands of the ``diptych`` CLI; each module has ``register(subparsers)``."""
