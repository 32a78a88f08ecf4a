"""A sweep's trials by status and each cell's best lr so far, read from its storage (no Ray).

Every Tune experiment of the sweep (one per shard, `sweeps.run.shards`) keeps a trial index
(`sweeps.run.trial_index`), which is read instead of Tune's experiment state: `status` and the
end-of-run summary cost the same whatever the trials reported. An experiment without an index
(a sweep run before the index existed, not resumed since) is read through Tune
(`sweeps.run.tune_state`). Statuses come from `contract.outcome` and the best lr from
`contract.selection` (`sweeps.run.ledger`), the rules the tracker and the searcher use, so
`status`, MLflow and the searcher never disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from analysis.seed_rule import SeedRule
from contract.outcome import ENDED
from contract.trial import TrialMeta
from sweeps.run.ledger import CellStatus, TrialEntry, TrialLedger
from sweeps.run.seed_decisions import decisions_path, read_decisions
from sweeps.run.shards import read_plan, shard_dir
from sweeps.run.trial_index import read_index
from sweeps.run.tune_state import trial_status, tune_retries, tune_trials
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import locate


@dataclass
class SweepSummary:
    """How many of the trials the spec expects have ended, by status."""

    expected: int
    statuses: Counter = field(default_factory=Counter)

    @property
    def ended(self) -> int:
        return sum(self.statuses[status.value] for status in ENDED)

    @property
    def complete(self) -> bool:
        return self.ended >= self.expected


def experiment_dirs(spec: SweepSpec) -> list[str]:
    """The folders of the sweep's Tune experiments, one per shard (the sweep folder alone for a
    sweep without a shard plan)."""
    sweep_dir = locate(spec).experiment_dir
    plan = read_plan(sweep_dir)
    count = len(plan.shards) if plan is not None else 1
    return [shard_dir(sweep_dir, index) for index in range(count)]


def tune_entries(spec: SweepSpec, trials: list[Any]) -> list[TrialEntry]:
    """The ledger entries of Tune trials (as Tune holds them, or saved them)."""
    retries = tune_retries(spec)
    metric = spec.search.metric
    return [
        TrialEntry.of(
            TrialMeta.of(trial.config), trial_status(trial, retries), trial.last_result, metric
        )
        for trial in trials
    ]


def experiment_entries(spec: SweepSpec, experiment_dir: str) -> list[TrialEntry]:
    """Every trial of one Tune experiment: from its index, or from Tune's state without one."""
    indexed = read_index(experiment_dir)
    if indexed is not None:
        return list(indexed.values())
    return tune_entries(spec, tune_trials(experiment_dir))


def sweep_ledger(spec: SweepSpec) -> TrialLedger:
    """Every trial of the sweep, all shards."""
    ledger = TrialLedger.for_spec(spec)
    for experiment_dir in experiment_dirs(spec):
        ledger.record_all(experiment_entries(spec, experiment_dir))
    return ledger


def sweep_status(spec: SweepSpec) -> list[CellStatus]:
    """One row per cell of the spec, in spec order."""
    return sweep_ledger(spec).rows(spec)


def sweep_summary(spec: SweepSpec) -> SweepSummary:
    """The trials of the sweep by status, against the spec's expected count."""
    return SweepSummary(spec.expected_trials(), sweep_ledger(spec).counts())


def cell_statuses(spec: SweepSpec, trials: list[Any]) -> list[CellStatus]:
    """One row per cell of the spec from Tune trials (a full pass over them)."""
    ledger = TrialLedger.for_spec(spec)
    ledger.record_all(tune_entries(spec, trials))
    return ledger.rows(spec)


def seed_lines(spec: SweepSpec) -> list[str]:
    """Adaptive seeds: per primary cell pair, its seeds, pairs and why it stopped or goes on
    (`analysis.seed_rule`, as the searcher last judged it); nothing for a seed list."""
    adaptive = spec.grid.adaptive
    if adaptive is None:
        return []
    rule = SeedRule(**adaptive.model_dump())
    decisions = read_decisions(decisions_path(locate(spec).spec_file))
    lines = [
        f"seeds: {adaptive.initial} per lr trial, then +{adaptive.batch} at the chosen lrs of "
        f"a primary pair while its interval is wider than ±{adaptive.until_halfwidth:g}, up "
        f"to {adaptive.max}"
    ]
    for arm, baseline in spec.primary_cell_pairs():
        decision = decisions.get((arm.cell_id, baseline.cell_id))
        judged = "not judged yet (lr search running)" if decision is None else decision.text(rule)
        lines.append(f"  {arm.cell_id} vs {baseline.arm}: {judged}")
    return lines
