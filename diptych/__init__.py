"""Diptych: chat with a base model and its RL-tuned twin side by side, vote, train, compare."""

__version__ = "0.1.0"
