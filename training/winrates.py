"""How far each adapter has moved from the base, in the user's own votes.

Two views, both computed from ``Store.votes()`` rows (deleted votes excluded):

- ``adapter_winrates``: for each adapter, its votes against the base model. A tie
  counts as half a win and half a loss; ``both_bad`` and ``better`` (the user wrote
  their own answer) say nothing about which of the two is better and are left out of
  the rate, but counted. The 95% interval is the Wilson score interval, which stays
  inside [0, 1] and behaves with few votes. Sorted by each adapter's first vote, so the
  list is also the time series across adapter versions.
- ``parent_winrates``: the same count for each adapter that continues another (``--from``)
  against that parent: whether a round improved on the version it started from.
- ``ratings``: Bradley-Terry strengths of every model that met another (the base and
  each adapter; a response's identity is its adapter name, or ``base``), fitted with
  Hunter's MM algorithm on left/right wins and ties (again half a win each), shown on
  the Elo scale with the base at 0, with seeded bootstrap 95% intervals.

Plain dataclasses; ``summary`` gives one JSON-ready dict for ``diptych data stats``
and the stats view. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .store import BASE, Store, identity

Z95 = 1.959963984540054
# One virtual tie between every two models that met keeps a model with no wins (or no
# losses) at a finite rating.
PRIOR_TIES = 1.0
ELO = 400 / math.log(10)


@dataclass
class AdapterWinrate:
    adapter: str
    first_vote_at: str
    last_vote_at: str
    wins: int = 0
    losses: int = 0
    ties: int = 0
    both_bad: int = 0
    better: int = 0
    win_rate: float | None = None  # (wins + ties / 2) / (wins + losses + ties)
    low: float | None = None
    high: float | None = None


@dataclass
class Rating:
    model: str
    rating: float  # Elo scale: +100 wins about 64% against 0
    low: float
    high: float
    games: int  # decisive votes and ties it took part in


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when there is no data."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _tally(votes: list[dict], opponent_of: dict[str, str] | None) -> list[AdapterWinrate]:
    """Each adapter's votes against its opponent: the base (``opponent_of`` None), else the
    model ``opponent_of`` names for it (votes where any other two met are left out)."""
    table: dict[str, AdapterWinrate] = {}
    for vote in votes:
        sides = {identity(vote["left"]): "left", identity(vote["right"]): "right"}
        if len(sides) != 2:
            continue  # a model against itself
        a, b = sides
        if opponent_of is None:
            adapter = b if a == BASE else a if b == BASE else None
        else:
            adapter = a if opponent_of.get(a) == b else b if opponent_of.get(b) == a else None
        if adapter is None:
            continue
        row = table.setdefault(adapter, AdapterWinrate(adapter, vote["created_at"], vote["created_at"]))
        row.first_vote_at = min(row.first_vote_at, vote["created_at"])
        row.last_vote_at = max(row.last_vote_at, vote["created_at"])
        choice = vote["choice"]
        if choice in ("left", "right"):
            if choice == sides[adapter]:
                row.wins += 1
            else:
                row.losses += 1
        elif choice == "tie":
            row.ties += 1
        elif choice == "both_bad":
            row.both_bad += 1
        else:
            row.better += 1
    for row in table.values():
        n = row.wins + row.losses + row.ties
        if n:
            row.win_rate = (row.wins + row.ties / 2) / n
            row.low, row.high = wilson(row.wins + row.ties / 2, n)
    return sorted(table.values(), key=lambda r: (r.first_vote_at, r.adapter))


def adapter_winrates(votes: list[dict]) -> list[AdapterWinrate]:
    """Each adapter against the base, in the order the adapters first met the user."""
    return _tally(votes, None)


def parent_winrates(votes: list[dict], parents: dict[str, str]) -> list[AdapterWinrate]:
    """Each version against the adapter it continues (``parents``: adapter -> parent, see
    ``lineage.parents``), from the votes where the two met: did the round help?"""
    return _tally(votes, parents)


def _games(votes: list[dict]) -> tuple[list[str], np.ndarray]:
    """Model names and one row (i, j, score of i) per decisive vote or tie."""
    games = []
    for vote in votes:
        a, b = identity(vote["left"]), identity(vote["right"])
        if a != b and vote["choice"] in ("left", "right", "tie"):
            score = {"left": 1.0, "right": 0.0, "tie": 0.5}[vote["choice"]]
            games.append((a, b, score))
    names = sorted({name for a, b, _ in games for name in (a, b)})
    index = {name: i for i, name in enumerate(names)}
    rows = np.array([(index[a], index[b], s) for a, b, s in games], dtype=float).reshape(-1, 3)
    return names, rows


def _fit(rows: np.ndarray, prior: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Bradley-Terry log-strengths by MM (Hunter 2004), mean zero."""
    n = len(prior)
    i, j, score = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    wins = prior.copy()  # wins[a, b]: how often a beat b
    np.add.at(wins, (i, j), score)
    np.add.at(wins, (j, i), 1 - score)
    played = wins + wins.T
    total_wins = wins.sum(axis=1)
    strength = np.ones(n)
    for _ in range(iterations):
        new = total_wins / (played / (strength[:, None] + strength[None, :])).sum(axis=1)
        new /= math.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new) - np.log(strength))) < 1e-10
        strength = new
        if done:
            break
    return np.log(strength)


def ratings(votes: list[dict], resamples: int = 200, seed: int = 0) -> list[Rating]:
    """Bradley-Terry ratings with bootstrap intervals, best first; the base is 0 when it played."""
    names, rows = _games(votes)
    if not names:
        return []
    met = np.zeros((len(names), len(names)))
    met[rows[:, 0].astype(int), rows[:, 1].astype(int)] = 1
    prior = (met + met.T > 0) * PRIOR_TIES / 2

    def elo(log_strength: np.ndarray) -> np.ndarray:
        anchor = log_strength[names.index(BASE)] if BASE in names else 0.0
        return ELO * (log_strength - anchor)

    point = elo(_fit(rows, prior))
    rng = np.random.default_rng(seed)
    samples = np.array([elo(_fit(rows[rng.integers(0, len(rows), len(rows))], prior))
                        for _ in range(resamples)])
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    games = np.bincount(rows[:, :2].astype(int).ravel(), minlength=len(names))
    result = [Rating(name, float(point[k]), float(low[k]), float(high[k]), int(games[k]))
              for k, name in enumerate(names)]
    return sorted(result, key=lambda r: -r.rating)


def summary(store: Store, resamples: int = 200, parents: dict[str, str] | None = None) -> dict:
    """Counts, per-adapter win rates (against the base, and against the parent for the
    adapters in ``parents``) and ratings as one JSON-ready dict."""
    votes = store.votes()
    return {
        "counts": store.pair_counts(),
        "adapters": [asdict(row) for row in adapter_winrates(votes)],
        "versus_parent": [{"parent": (parents or {})[row.adapter], **asdict(row)}
                          for row in parent_winrates(votes, parents or {})],
        "ratings": [asdict(row) for row in ratings(votes, resamples=resamples)],
    }
