"""A sweep's trials by status, kept incrementally: the per-cell counts and best lr that the
progress display, the end-of-run summary and `sparsesweep status` show.

One `TrialEntry` per trial (keyed by its config hash, the trial's identity across shards and
restarts), replaced whenever the trial's status changes. Recording an entry costs O(1) for
the counts; a cell's best lr (`contract.selection`, the rule the searcher and the report use)
is recomputed from that cell's entries only when asked after a change in the cell. Nothing
here grows with the trials already run, so Tune's hooks can feed it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract.outcome import ENDED, Status
from contract.selection import LrTrial, rank_lr_trials
from contract.trial import Stage, TrialMeta

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec


@dataclass(frozen=True)
class TrialEntry:
    """What the counts need of one trial: its cell, lr trial, status and search-metric value."""

    config_hash: str
    cell: str
    stage: str
    lr_trial: int
    lr: float
    seed: int
    status: Status
    value: float | None = None

    @classmethod
    def of(
        cls, meta: TrialMeta, status: Status, last_result: Mapping[str, Any] | None, metric: str
    ) -> TrialEntry:
        """The entry of a trial with `meta` in `status`, valued by its last reported `metric`."""
        value = (last_result or {}).get(metric)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return cls(
            config_hash=meta.config_hash,
            cell=meta.cell,
            stage=meta.stage,
            lr_trial=meta.lr_trial,
            lr=meta.lr,
            seed=meta.seed,
            status=status,
            value=float(value) if numeric else None,
        )


@dataclass(frozen=True)
class CellStatus:
    """Trial counts of one cell by status (started trials), and its best lr so far by the
    lr-selection rule."""

    cell_id: str
    expected: int
    counts: Counter = field(default_factory=Counter)
    best_value: float | None = None
    best_lr: float | None = None

    def count(self, status: Status) -> int:
        """Trials of this cell in `status` (pending: not started yet, or waiting to start)."""
        if status is Status.PENDING:
            return max(self.expected - sum(self.counts.values()), 0)
        return self.counts[status.value]


class TrialLedger:
    """Every trial's latest entry, with the counts per cell and in total kept as they change."""

    def __init__(self, metric: str, seeds_per_lr_trial: int) -> None:
        self.metric = metric
        self.seeds_per_lr_trial = seeds_per_lr_trial
        self._entries: dict[str, TrialEntry] = {}
        self._totals: Counter = Counter()
        self._cells: dict[str, Counter] = defaultdict(Counter)
        self._groups: dict[str, dict[int, dict[str, TrialEntry]]] = defaultdict(dict)
        self._best: dict[str, tuple[float, float] | None] = {}

    @classmethod
    def for_spec(cls, spec: SweepSpec) -> TrialLedger:
        """An empty ledger ranking lr trials as `spec` does (its metric and seeds)."""
        return cls(spec.search.metric, len(spec.grid.search_seeds()))

    def record(self, entry: TrialEntry) -> bool:
        """Make `entry` its trial's latest; False when it changes nothing."""
        previous = self._entries.get(entry.config_hash)
        if previous == entry:
            return False
        if previous is not None:
            self._totals[previous.status.value] -= 1
            self._cells[previous.cell][previous.status.value] -= 1
            if previous.stage == Stage.SEARCH:
                self._groups[previous.cell][previous.lr_trial].pop(previous.config_hash, None)
            self._best.pop(previous.cell, None)
        self._entries[entry.config_hash] = entry
        self._totals[entry.status.value] += 1
        self._cells[entry.cell][entry.status.value] += 1
        if entry.stage == Stage.SEARCH:
            self._groups[entry.cell].setdefault(entry.lr_trial, {})[entry.config_hash] = entry
        self._best.pop(entry.cell, None)
        return True

    def record_all(self, entries: Iterable[TrialEntry]) -> None:
        """Record several entries, in order."""
        for entry in entries:
            self.record(entry)

    def get(self, config_hash: str) -> TrialEntry | None:
        """The latest entry of a trial, if it has one."""
        return self._entries.get(config_hash)

    def entries(self) -> list[TrialEntry]:
        """Every trial's latest entry."""
        return list(self._entries.values())

    def count(self, status: Status) -> int:
        """Trials whose latest entry is in `status` (pending: only those recorded as such)."""
        return self._totals[status.value]

    def ended(self) -> int:
        """Trials that ended (finished, stopped, diverged or failed)."""
        return sum(self._totals[status.value] for status in ENDED)

    def counts(self) -> Counter:
        """Started trials by status value (pending ones are the spec's others: not counted)."""
        return _started(self._totals)

    def cell_counts(self, cell: str) -> Counter:
        """One cell's started trials by status value."""
        return _started(self._cells.get(cell, Counter()))

    def best(self, cell: str) -> tuple[float, float] | None:
        """(score, lr) of the cell's best lr trial among those whose seeds have all ended."""
        if cell not in self._best:
            self._best[cell] = self._rank(cell)
        return self._best[cell]

    def _rank(self, cell: str) -> tuple[float, float] | None:
        """The cell's search-stage lr trials ranked by `contract.selection.rank_lr_trials`."""
        trials = [
            LrTrial(
                lr_trial,
                next(iter(members.values())).lr,
                [(member.status, member.value) for member in members.values()],
            )
            for lr_trial, members in self._groups.get(cell, {}).items()
            if members
        ]
        ranking = rank_lr_trials(
            trials, self.metric, self.seeds_per_lr_trial, [trial.lr for trial in trials]
        )
        if ranking.best is None:
            return None
        lr = next(trial.lr for trial in trials if trial.key == ranking.best)
        return ranking.scores[ranking.best], lr  # type: ignore[return-value]

    def row(self, cell_id: str, expected: int) -> CellStatus:
        """The `CellStatus` of one cell expecting `expected` trials."""
        best = self.best(cell_id)
        return CellStatus(
            cell_id=cell_id,
            expected=expected,
            counts=self.cell_counts(cell_id),
            best_value=None if best is None else best[0],
            best_lr=None if best is None else best[1],
        )

    def rows(self, spec: SweepSpec) -> list[CellStatus]:
        """One row per cell of `spec`, in spec order."""
        expected = spec.trials_per_cell()
        return [self.row(cell.cell_id, expected) for cell in spec.cells()]


def _started(counts: Counter) -> Counter:
    """The counts of statuses other than pending that some trial is in."""
    return Counter({k: n for k, n in counts.items() if n > 0 and k != Status.PENDING.value})
