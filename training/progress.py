"""A training job's progress lines: the phases, the event, the JSON-lines format.

With ``--progress jsonl`` a job (``training/job.py``), GRPO's dry run (``training/grpo.py``)
and the train command (``diptych/commands/train.py``) print one JSON object a line on
stdout, each with a ``phase``; the desktop's job monitor reads them back with ``Reader``.
Nothing here imports Qt or the training stack.
"""

from __future__ import annotations

import json

# The phases, in the order a job goes through them, and what each says to a person.
PHASES = {
    "load": "Loading the base weights…",
    "prepare": "Preparing the data…",  # tokenizing; DPO: the base's log-probs of every pair
    "eval_before": "Evaluating the base…",
    "sample": "Sampling and scoring a few answers…",  # GRPO's dry run: one scored answer
    "stage": "GRPO: sampling, scoring, reinforcing the better answers",  # a skill job's GRPO starts
    "train": "Training",
    "eval": "Evaluating",  # GRPO's held-out reward, every few steps
    "drift": "Measuring the adapter's KL from the base…",
    "eval_after": "Evaluating the adapter…",
    "save": "Saving the adapter…",
    "done": "Done",
    "cancelled": "Cancelled: no adapter was written",
    "error": "Failed",
}
# The keys every job line carries (null when unknown).
KEYS = ("step", "total", "loss", "reward", "kl", "eta_s")


class Event(dict):
    """One progress line, read: a dict of its keys, with the common ones as attributes."""

    @property
    def phase(self) -> str:
        return self.get("phase") or ""

    @property
    def step(self):
        return self.get("step")

    @property
    def total(self):
        return self.get("total")


def line(phase: str, keys: bool = True, **values) -> str:
    """The JSON line of one event (no newline); ``keys``: with every one of ``KEYS``."""
    event = {"phase": phase, **(dict.fromkeys(KEYS) if keys else {}), **values}
    return json.dumps(event, default=str)


def parse(text: str) -> Event | None:
    """The event a line holds, or None where it is not a progress line."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return Event(value) if isinstance(value, dict) else None


class Reader:
    """Splits a job's stdout, as it arrives in chunks, into whole lines."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        """The whole, non-blank lines completed by ``data``."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [raw.decode("utf-8", "replace") for raw in lines if raw.strip()]
