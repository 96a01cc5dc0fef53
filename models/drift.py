"""How far an adapter moved the model: mean per-token KL(tuned ‖ base) over a prompt set.

For each prompt the tuned model samples an answer from its own distribution (temperature
1, no truncation, a fixed seed per prompt, at most ``max_tokens`` tokens), and at every
position of that answer :func:`diptych.models.scoring.kl_per_token` computes the exact KL
between the two next-token distributions over the whole vocabulary. The mean over all
answer tokens estimates the per-token KL(tuned ‖ base) along the tuned model's own
answers: the quantity an RL objective's KL penalty keeps small. It is 0 without an
adapter and never negative; with a fixed seed it is repeatable.

Two prompt sets are measured (:data:`SETS`):

- ``held_out``: the fixed prompts in ``data/held_out_prompts.txt``, which no trainer ever
  sees; the same for every adapter, so adapters compare on it;
- ``recent``: the user's own most recent prompts (the caller reads them from the store),
  which are what the user actually asks, and may well be what the adapter trained on.

Results are stored with the adapter, in its ``meta.json`` under ``"drift"``
(:func:`diptych.models.adapters.record_drift`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Callable

from . import scoring
from .engine import Engine, SamplingParams

SETS = {"held_out": "held-out prompts", "recent": "your recent prompts"}
MAX_TOKENS = 48  # long enough to see an answer's shape, short enough to measure in seconds
RECENT = 16  # how many of the user's latest distinct prompts


@dataclass
class Drift:
    kl: float  # mean per-token KL(tuned || base) over every answer token
    prompts: int
    tokens: int
    max_tokens: int
    seconds: float
    measured_at: str

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_prompts() -> list[list[dict]]:
    text = resources.files(__package__).joinpath("data/held_out_prompts.txt").read_text("utf-8")
    return [[{"role": "user", "content": line.strip()}] for line in text.splitlines() if line.strip()]


def sampling(max_tokens: int, seed: int) -> SamplingParams:
    """The tuned model's own distribution, unchanged (so the mean is a KL, not a bias)."""
    return SamplingParams(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0,
                          max_tokens=max_tokens, seed=seed)


def measure(base: Engine, tuned: Engine, prompts: list[list[dict]], *,
            max_tokens: int = MAX_TOKENS, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> Drift:
    """Mean per-token KL(tuned ‖ base) on answers the tuned engine samples for ``prompts``.

    ``base`` and ``tuned`` are two engines on the same model file, ``tuned`` with the
    adapter. ``progress(done, total)`` is called after each prompt.
    """
    if not prompts:
        raise ValueError("no prompts to measure the drift on")
    started = time.perf_counter()
    total_kl, tokens = 0.0, 0
    for i, messages in enumerate(prompts):
        completion = tuned.generate(messages, sampling(max_tokens, seed + i))
        kl = scoring.kl_per_token(base, tuned, messages, scoring.answer_ids(completion))
        total_kl += float(kl.sum())
        tokens += len(kl)
        if progress:
            progress(i + 1, len(prompts))
    return Drift(kl=total_kl / tokens if tokens else 0.0, prompts=len(prompts), tokens=tokens,
                 max_tokens=max_tokens, seconds=round(time.perf_counter() - started, 2),
                 measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def measure_adapter(model_path, adapter_gguf, recent_prompts: list[list[dict]] | None = None, *,
                    max_tokens: int = MAX_TOKENS, n_ctx: int = 2048,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, Drift]:
    """Measure an adapter on the held-out set and, when given, the user's recent prompts.

    Loads its own pair of engines (the model file is mmap'd: the weights are shared with
    any engine already open on it). Recent prompts too long for ``n_ctx`` are skipped.
    ``progress(set, done, total)`` is called after each prompt.
    """
    base = Engine(model_path, n_ctx=n_ctx)
    tuned = None
    try:  # close what was opened, whatever stops the measurement (a job's Cancelled too)
        tuned = Engine(model_path, n_ctx=n_ctx, adapter=adapter_gguf)
        sets = {"held_out": held_out_prompts()}
        fits = [p for p in recent_prompts or []
                if len(tuned.tokenize(tuned.render(p))) + max_tokens < tuned.n_ctx]
        if fits:
            sets["recent"] = fits[:RECENT]
        return {name: measure(base, tuned, prompts, max_tokens=max_tokens,
                              progress=progress and (lambda d, t, name=name: progress(name, d, t)))
                for name, prompts in sets.items()}
    finally:
        base.close()
        if tuned is not None:
            tuned.close()
