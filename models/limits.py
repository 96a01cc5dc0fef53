"""Limits the CLI, the app and the training jobs all hold values to, each stated once."""

from __future__ import annotations

import argparse

SEED_MAX = 2**32 - 2  # llama.cpp seeds are 32-bit, and 2**32 - 1 (LLAMA_DEFAULT_SEED) means "draw a random seed"


def seed(text: str) -> int:
    """An argparse type: a seed llama.cpp and the training jobs take, 0 to SEED_MAX."""
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX}, not {text}")
    return value


seed.__name__ = "int"  # argparse names the type in its error messages
