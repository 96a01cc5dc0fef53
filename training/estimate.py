"""How long a job on the votes will take, said before it starts: from the token counts.

A job's time is a fixed part (starting, loading the base, saving, the drift measurement)
and a part that grows with the tokens the trainer reads: every pass over every example,
each as long as its prompt and answer, up to ``max_length``. The seconds of each part are
those of default rounds on votes cast with the app's defaults on two CPU cores
(``bench/round_bench.py``; ``bench/RESULTS.md``). A faster machine finishes sooner: the
estimate is an order of magnitude, said as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil


@dataclass(frozen=True)
class Pace:
    fixed_s: float  # starting, loading, evaluating, saving: without the drift measurement
    per_token_s: float  # per token the trainer reads (preparing and training)
    sequences: int  # sequences an example puts through the model (a pair: chosen and rejected)


# From bench/round_bench.py's default rounds on 13 votes of 256-token answers, cut at 128:
# the phases that do not grow with the data (start, load, both evaluations, save), and
# the seconds per token of the rest (preparing, training). They also give the rounds cut
# at 256 within 12 % (bench/RESULTS.md).
PACES = {
    "pairs": Pace(fixed_s=47.0, per_token_s=0.0120, sequences=2),
    "labels": Pace(fixed_s=39.0, per_token_s=0.0152, sequences=1),
    "answers": Pace(fixed_s=33.0, per_token_s=0.0129, sequences=1),
}
DRIFT_S = 49.0  # both prompt sets, 48 tokens an answer: about the same for every kind


def job_seconds(data: str, examples: int, mean_tokens: float, *, max_length: int,
                epochs: float = 3.0, steps: int | None = None, batch_size: int = 4,
                drift: bool = True) -> float | None:
    """Seconds a job of ``data`` kind ("pairs", "labels" or "answers") takes on
    ``examples`` examples whose sequences (prompt and answer) hold ``mean_tokens`` tokens
    on average; None for a kind it cannot tell (such as GRPO, whose cost is its sampling)."""
    pace = PACES.get(data)
    if pace is None or examples <= 0:
        return None
    passes = epochs if steps is None else steps * batch_size / examples
    tokens = min(mean_tokens, max_length) * pace.sequences * examples * max(passes, 1.0)
    return pace.fixed_s + pace.per_token_s * tokens + (DRIFT_S if drift else 0.0)


def describe(seconds: float | None) -> str:
    """``seconds`` as the Train tab says it: "about 4 min on two CPU cores"."""
    if seconds is None:
        return ""
    if seconds < 90:
        return "about a minute on two CPU cores"
    return f"about {ceil(seconds / 60)} min on two CPU cores"
