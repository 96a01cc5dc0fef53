"""Subcommands of the ``diptych`` CLI; each module has ``register(subparsers)``.

Also the argparse types of their numeric options: a value out of range is a usage error
(one line, exit code 2) before anything is loaded (the seed's is
``diptych.models.limits.seed``, which the jobs take too). The same limits hold for
``diptych.models.engine.SamplingParams``, which Python callers and the app use.
"""

from __future__ import annotations

import argparse
import math


def _typed(parse, name: str):
    parse.__name__ = name  # argparse names the type in its error messages
    return parse


def at_least(minimum: int):
    """An integer option of ``minimum`` or more."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {text}")
        return value

    return _typed(parse, "int")


def from_to(minimum: int, maximum: int):
    """An integer option from ``minimum`` to ``maximum``."""
    def parse(text: str) -> int:
        value = int(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum:,}, not {text}")
        return value

    return _typed(parse, "int")


def temperature(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more (0: always the "
                                         f"likeliest token), not {text}")
    return value


temperature = _typed(temperature, "float")
