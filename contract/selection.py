"""The one rule that picks a cell's best learning rate (searcher, `status` and report alike).

Each lr trial of a cell ran on several seeds. A seed scores the final value of the sweep's
search metric; a diverged seed scores the worst possible value (0 % for an accuracy, +inf for
a loss: its last finite value would rank an lr that blows up as if it had merely stopped
early); a failed or unfinished seed does not count. An lr trial scores the mean over its
counted seeds; the best score wins, ties going to the earliest lr trial.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from contract.names import metric_direction
from contract.outcome import Status

K = TypeVar("K", bound=Hashable)

DIVERGED_ACCURACY = 0.0


def worst_value(metric: str) -> float:
    """What a diverged seed scores on `metric`."""
    return math.inf if metric_direction(metric) == "minimize" else DIVERGED_ACCURACY


def seed_score(status: Status | str, value: float | None, metric: str) -> float | None:
    """A seed's score under the rule (None: the seed does not count)."""
    status = Status(status)
    if status is Status.DIVERGED:
        return worst_value(metric)
    if status not in (Status.FINISHED, Status.STOPPED):
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def group_score(scores: Iterable[float | None]) -> float | None:
    """Mean of the counted seed scores of one lr trial (None when no seed counts)."""
    counted = [score for score in scores if score is not None]
    return sum(counted) / len(counted) if counted else None


def best_key(scores: Mapping[K, float | None], metric: str) -> K | None:
    """The lr trial with the best score (ties: the smallest key); None if none scored."""
    sign = 1.0 if metric_direction(metric) == "maximize" else -1.0
    scored = [(key, score) for key, score in scores.items() if score is not None]
    if not scored:
        return None
    best = max(sign * score for _, score in scored)
    return min(key for key, score in scored if sign * score == best)  # type: ignore[type-var]
