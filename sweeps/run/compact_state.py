"""Keep Tune's record of each trial small: only what Tune and the sweep read back.

Tune keeps every trial in its experiment state and rewrites that file at each snapshot (every
10 s or more, ~7 s per write at 12,800 trials of 32 KB). Per trial it stores the last result
and, for every numeric key of it, running statistics (`metric_analysis`, `metric_n_steps`:
13 KB for a trial's ~24 metrics). This callback, placed after every other callback (the
tracker and the result loggers see whole results), trims both as Tune allows a callback to:

- `on_trial_result` drops the result keys nothing reads from Tune's record: the replayed
  `history`, the skipped-checkpoint notes, the config Tune copies into every result
  (`BULKY_RESULT_KEYS`) and the epoch metrics other than the sweep's search metric; the
  trial's `result.json` and MLflow keep them all, and Tune stores the trimmed result as the
  trial's last result (what the searcher, the tracker's end of a trial and `status` read:
  `epoch`, `diverged`, `checkpoint_path`, the search metric and the final test_acc1 that
  adaptive seeds pair on stay);
- when a trial ends, its metric statistics are cleared: Tune only uses them to rank trials
  for `ResultGrid.get_best_result` and its console reporter, neither of which a sweep uses
  (`sparsesweep status` and the report rank lr trials by `contract.selection`).
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from analysis.seed_rule import PAIRED_METRIC
from contract.names import EPOCH_METRICS
from contract.trial import ResultKey

BULKY_RESULT_KEYS: tuple[str, ...] = (
    ResultKey.HISTORY,
    ResultKey.SKIPPED_CHECKPOINTS,
    "config",
)
"""Result keys left out of Tune's record of a trial (the result files and MLflow keep them)."""


def drop_metric_statistics(trial: Any) -> None:
    """Clear the running statistics Tune keeps per metric of a trial that has ended."""
    metadata = trial.run_metadata
    if metadata.metric_analysis or metadata.metric_n_steps:
        metadata.metric_analysis = {}
        metadata.metric_n_steps = {}


class CompactTrialState(Callback):
    """Trims results and ended trials' statistics before Tune stores them (module docstring).
    Nothing of it goes into Tune's snapshots."""

    def __init__(self, search_metric: str) -> None:
        kept = (search_metric, PAIRED_METRIC)
        self._dropped = (*BULKY_RESULT_KEYS, *(m for m in EPOCH_METRICS if m not in kept))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        for key in self._dropped:
            result.pop(key, None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        drop_metric_statistics(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        drop_metric_statistics(trial)
