"""The one rule that ranks a cell's lr trials (searcher, `status`, progress, tracker, report).

Each lr trial of a cell runs on several seeds. A seed scores the final value of the sweep's
search metric; a diverged seed scores the worst possible value (0 % for an accuracy, +inf for
a loss: its last finite value would rank an lr that blows up as if it had merely stopped
early); a failed or unfinished seed does not count. An lr trial is ranked once
`seeds_expected` of its seeds have ended (finished, stopped, diverged or failed), and then
scores the mean over its counted seeds (none counted: not ranked).

The best score wins. Scores equal up to float rounding (`TIE_REL_TOL`: seed means of the
same correct-image counts summed in another order) are a tie, broken deterministically: the
lr nearer the middle of the cell's lr grid on a log scale (the log-midpoint of the grid's
smallest and largest lr; without a grid, of the ranked trials' lrs), then the smaller lr,
then the order the trials were given in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from contract.names import metric_direction
from contract.outcome import ENDED, Status

DIVERGED_ACCURACY = 0.0
TIE_REL_TOL = 1e-9
"""Relative tolerance under which two lr trials' scores are the same score (a tie)."""


@dataclass(frozen=True)
class LrTrial:
    """One lr trial of a cell: how the caller names it, its lr, and its seeds seen so far."""

    key: Hashable
    lr: float
    seeds: Sequence[tuple[Status | str, float | None]]
    """(status, final value of the search metric) of each seed seen so far."""


@dataclass(frozen=True)
class LrRanking:
    """The scores of a cell's lr trials and the winner under the rule."""

    scores: Mapping[Hashable, float | None]
    """Per key: the trial's score, None when it is not ranked (fewer than `seeds_expected`
    seeds ended, or no seed counts)."""
    best: Hashable | None
    tied: tuple[Hashable, ...]
    """The keys whose score equals the best's, the winner first (more than one: an lr tie)."""


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


def trial_score(trial: LrTrial, metric: str, seeds_expected: int) -> float | None:
    """An lr trial's score: the mean of its counted seeds once `seeds_expected` have ended."""
    ended = sum(Status(status) in ENDED for status, _ in trial.seeds)
    if ended < seeds_expected:
        return None
    counted = [
        score
        for score in (seed_score(status, value, metric) for status, value in trial.seeds)
        if score is not None
    ]
    return math.fsum(counted) / len(counted) if counted else None


def rank_lr_trials(
    trials: Iterable[LrTrial],
    metric: str,
    seeds_expected: int,
    grid: Sequence[float] | None = None,
) -> LrRanking:
    """Score every lr trial of one cell and pick the best (module docstring); `grid` is the
    cell's lr grid (or search range), whose log-midpoint breaks ties."""
    if seeds_expected < 1:
        raise ValueError(f"seeds_expected must be at least 1, got {seeds_expected}")
    trials = list(trials)
    keys = [trial.key for trial in trials]
    if len(set(keys)) != len(keys):
        raise ValueError(f"lr trial keys must be unique, got {keys}")
    for trial in trials:
        if not trial.lr > 0:
            raise ValueError(f"lr trial {trial.key!r}: lr must be positive, got {trial.lr}")
    scores = {trial.key: trial_score(trial, metric, seeds_expected) for trial in trials}
    ranked = [trial for trial in trials if scores[trial.key] is not None]
    if not ranked:
        return LrRanking(scores=scores, best=None, tied=())
    sign = 1.0 if metric_direction(metric) == "maximize" else -1.0
    top = max(sign * scores[trial.key] for trial in ranked)  # type: ignore[operator]
    tied = [trial for trial in ranked if _same_score(sign * scores[trial.key], top)]  # type: ignore[operator]
    middle = _log_middle(grid if grid else [trial.lr for trial in ranked])
    order = sorted(tied, key=lambda trial: (_distance(trial.lr, middle), trial.lr))
    return LrRanking(scores=scores, best=order[0].key, tied=tuple(t.key for t in order))


def _same_score(score: float, top: float) -> bool:
    return score == top or math.isclose(score, top, rel_tol=TIE_REL_TOL)


def _log_middle(lrs: Sequence[float]) -> float:
    """The midpoint of the smallest and largest lr on a log scale."""
    if min(lrs) <= 0:
        raise ValueError(f"the lr grid must be positive, got {list(lrs)}")
    return (math.log(min(lrs)) + math.log(max(lrs))) / 2


def _distance(lr: float, middle: float) -> float:
    """|log lr − middle|, rounded so that lrs placed symmetrically on a log grid
    (0.01 and 1 around 0.1) are equally near despite float rounding of the logs."""
    return round(abs(math.log(lr) - middle), 9)
