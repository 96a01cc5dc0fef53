"""A training job's progress lines: the phases, the event, the JSON-lines format.

With ``--progress jsonl`` a job (``training/job.py``), GRPO's dry run (``training/grpo.py``)
and the train command (``diptych/commands/train.py``) print one JSON object a line on
stdout, each with a ``phase``; the desktop's job monitor reads them back with ``Reader``.
Without it a job prints, on stderr, the lines a person reads (``human``, ``summary``): the
same lines the Train tab's log shows. Nothing here imports Qt or the training stack.
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
# The stages of a job of several phases (a ``stage`` line marks where each begins, a
# ``train`` line's ``stage`` says which it is in): what the Train tab says while it trains,
# and the marker it draws where it begins.
STAGES = {
    "reward": ("Reward model: learning to order your pairs", "reward model"),
    "warmup": ("Warm-up: learning from example answers", "warm-up"),
    "grpo": (PHASES["stage"], "GRPO"),
}
# The keys every job line carries (null when unknown).
KEYS = ("step", "total", "loss", "reward", "kl", "eta_s")


class Event(dict):
    """One progress line, read: a dict of its keys, with its phase as an attribute."""

    @property
    def phase(self) -> str:
        return self.get("phase") or ""


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


# -- what a person reads --------------------------------------------------------------

def human(event: dict, drift_sets: dict[str, str] | None = None) -> str | None:
    """The log line of one event, as a person would write it; None where the event says
    nothing new (a step without a loss, the second prompt of a drift set).
    ``drift_sets``: what each drift set is called (default: its key)."""
    phase = event.get("phase")
    step, total = event.get("step"), event.get("total")
    if phase == "train":
        if event.get("loss") is None:
            return None
        parts = [f"step {step}/{total}", f"loss {number(event['loss'])}"]
        parts += [f"{label} {number(event[key])}" for key, label in
                  (("reward", "reward/margin"), ("kl", "KL")) if event.get(key) is not None]
        if event.get("eta_s"):
            parts.append(f"ETA {duration(event['eta_s'])}")
        return "  ".join(parts)
    if phase == "eval":  # GRPO's held-out reward
        if event.get("reward") is None:
            return None
        ended = (f", {event['ended']} of {event['n']} ended by themselves"
                 if event.get("ended") is not None and event.get("n") else "")
        return f"step {step or 0}: held-out reward {number(event['reward'])}{ended}"
    if phase == "drift":
        if step != 1:
            return None
        name = event.get("set")
        return f"{PHASES['drift'][:-1]} on {(drift_sets or {}).get(name, name)} ({total})…"
    if phase == "load" and (event.get("processes") or 1) > 1:
        return f"{PHASES['load'][:-1]} in {event['processes']} processes…"
    if phase == "error":
        return f"error: {event.get('error')}"
    if phase == "stage" and event.get("stage") == "warmup":  # an RLHF job's reward model is in
        return (f"Reward model done at step {step}: it orders {right(event)} held-out pairs "
                f"right ({number(event.get('pair_accuracy'))}); the warm-up starts.")
    if phase == "stage":
        return f"Warm-up done at step {step}: GRPO starts."
    if phase == "done":
        return f"Done: the adapter is in {event['path']}" if event.get("path") else None
    if phase == "cancelled":
        return PHASES["cancelled"] + "."
    if phase in ("load", "prepare", "eval_before", "eval_after", "save"):
        return PHASES[phase]
    return None


def summary(metrics: dict, drift: dict, data: dict | None = None,
            drift_sets: dict[str, str] | None = None, strong=lambda text: text) -> list[str]:
    """What a job's ``done`` line says, in at most two lines: before → after of each
    evaluation metric it stored, on which examples, and the KL from the base it measured
    per drift set. ``strong`` marks the after values (the Train tab: bold)."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    warmup = metrics.get("warmup")  # a skill job: after its warm-up, before GRPO
    rows = []
    for key in sorted((set(before) | set(after)) - {"n"}):  # n: the examples, said below
        b, a = before.get(key), after.get(key)
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            middle = f"{number(warmup.get(key))} → " if isinstance(warmup, dict) else ""
            rows.append(f"{key}: {number(b)} → {middle}{strong(number(a))}")
    if isinstance(warmup, dict):
        rows.insert(0, "base → after the warm-up → after GRPO")
    scorer = (metrics.get("reward_model") or {}).get("after")
    if isinstance(scorer, dict):  # an RLHF job: the reward model that scored the answers
        rows.insert(0, f"the reward model orders {right(scorer)} held-out pairs right")
    took = metrics.get("seconds") or metrics.get("time_s")
    if took:
        rows.append(f"took {duration(took)}")
    data = data or {}
    n = data.get("eval")
    plural = "" if n == 1 else "s"
    if n and data.get("held_out"):
        on = f"{n} held-out example{plural} (not trained on)"
    elif n:
        on = f"the {n} training example{plural} (too few to hold any out)"
    else:
        on = "held-out data"
    lines = [f"Evaluation on {on} — " + ("; ".join(rows) if rows else "no metrics")]
    kls = [f"{(drift_sets or {}).get(name, name)} {d['kl']:.3g}" for name, d in drift.items()
           if isinstance(d, dict) and d.get("kl") is not None
           and (drift_sets is None or name in drift_sets)]
    if kls:
        lines.append("KL from the base per token — " + "; ".join(kls))
    return lines


def right(measured: dict) -> str:
    """"5 of 6": how many of ``n`` held-out pairs a reward model's ``pair_accuracy`` orders right."""
    accuracy, n = measured.get("pair_accuracy"), measured.get("n")
    return "–" if accuracy is None or not n else f"{round(accuracy * n)} of {n}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def number(value) -> str:
    return "–" if value is None else f"{value:.3g}"
