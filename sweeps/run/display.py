"""The progress display of a sweep in the driver: one per sweep and process, shared by the
Tune callbacks of its shards (`sweeps.run.progress`), fed the trials' statuses one at a time.

Trials done / running / pending / failed against the spec's total, the elapsed time and an
ETA, and per cell its counts and best value so far (`contract.selection`, the rule `sparsesweep
status` and MLflow use), from a `sweeps.run.ledger.TrialLedger` (nothing here goes over all
trials). On a terminal it redraws in place at most once a second, showing the cells that
changed last; otherwise (a pipe, a file, CI) it prints one plain line per ended trial. No Ray
here: a re-run with nothing to do shows where the sweep stands without importing it.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from contract.outcome import Status
from sweeps.run.ledger import CellStatus, TrialEntry, TrialLedger
from sweeps.run.shards import read_plan, shard_dir, sweep_dir_of
from sweeps.run.status import experiment_entries
from sweeps.spec.schema import SweepSpec, count_range_text

Mode = Literal["live", "lines", "off"]
PROGRESS_ENV = "SPARSESWEEP_PROGRESS"
"""How the driver shows progress: `live` (redraw in place), `lines` (a line per ended trial)
or `off`; unset means off."""
MODES: tuple[str, ...] = ("live", "lines", "off")
DONE = (Status.FINISHED, Status.STOPPED, Status.DIVERGED)
"""Statuses shown as done (the trial ran to an end and has a result); failed is its own column."""
REFRESH_S = 1.0
"""At most one redraw of the live view per this many seconds."""
SHOWN_CELLS = 20
"""Rows of the live view's cell table: the cells whose trials changed last."""


def progress_mode(enabled: bool, stream: TextIO) -> Mode:
    """`off` when disabled, `live` when `stream` is a terminal, `lines` otherwise."""
    if not enabled:
        return "off"
    return "live" if stream.isatty() else "lines"


def duration(seconds: float) -> str:
    """`45s`, `2m10s`, `3h05m`: a short time for people."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class SweepProgress:
    """One sweep's ledger in this process (all shards) and its display."""

    def __init__(self, spec: SweepSpec, mode: Mode) -> None:
        self.spec = spec
        self.mode = mode
        self.ledger = TrialLedger.for_spec(spec)
        self.total = spec.expected_trials()
        self.most = spec.expected_trials_range()[1]
        """Adaptive seeds: the most trials the sweep may run (`total` is the fewest)."""
        self._per_cell = spec.trials_per_cell()
        self._cell_count = len(spec.cells())
        self._changed: OrderedDict[str, None] = OrderedDict()  # cells, least recent first
        self._live: Live | None = None
        self._begun = False
        self._started = time.monotonic()
        self._ended_at_start = 0
        self._drawn_at = -float("inf")
        self.interrupted = False
        """Ctrl-C was pressed: trials that stop now wait (pending) for the next start."""

    # ----------------------------------------------------------------- counts
    @property
    def done(self) -> int:
        return sum(self.ledger.count(status) for status in DONE)

    @property
    def failed(self) -> int:
        return self.ledger.count(Status.FAILED)

    @property
    def running(self) -> int:
        return self.ledger.count(Status.RUNNING)

    @property
    def ended(self) -> int:
        """Trials that ended (done or failed)."""
        return self.done + self.failed

    @property
    def pending(self) -> int:
        """Trials not started yet (or waiting to start again)."""
        return max(self.total - self.ended - self.running, 0)

    def cell(self, cell_id: str) -> CellStatus:
        """The row of one cell."""
        return self.ledger.row(cell_id, self._per_cell)

    def record(self, entry: TrialEntry) -> bool:
        """Note a trial's new status; False when it is not new."""
        if not self.ledger.record(entry):
            return False
        if entry.status is not Status.PENDING:
            self._changed[entry.cell] = None
            self._changed.move_to_end(entry.cell)
        return True

    # ----------------------------------------------------------------- display
    def begin(self, checkpointed: int = 0) -> None:
        """Start the display once per sweep and process (later shards continue it), saying
        where the sweep starts from: `checkpointed` trials continue from a checkpoint."""
        if self._begun:
            self.refresh(force=True)
            return
        self._begun = True
        self._started = time.monotonic()
        self._ended_at_start = self.ended
        if self.mode == "off":
            return
        name = self.spec.name
        if self.ended >= self.total:
            self._say(f"sweep {name}: {self.ended}/{self._total_text()} trials already ended")
        elif self.ended or checkpointed:
            self._say(
                f"sweep {name}: resuming: {self.ended} ended, {checkpointed} from checkpoints "
                f"({self._total_text()} trials in all)"
            )
        else:
            self._say(f"sweep {name}: {self._total_text()} trials to run")
        if self.mode == "live":
            self._start_live()

    def interrupt(self) -> None:
        """Ctrl-C: say at once what stopping keeps; the trials that stop from now on wait
        (pending) for the next start instead of counting as failed."""
        self.interrupted = True
        self._say(
            f"stopping: {self.running} trials in flight will resume from their checkpoint "
            "(Ctrl-C again stops without saving the sweep's state)"
        )

    def refresh(self, force: bool = False) -> None:
        """Redraw the live view, at most once per `REFRESH_S` unless forced."""
        if self.mode != "live" or not self._begun:
            return
        if not force and time.monotonic() - self._drawn_at < REFRESH_S:
            return
        if self._live is None:
            self._start_live()
            return
        self._live.update(self._render(), refresh=True)
        self._drawn_at = time.monotonic()

    def ended_line(self, entry: TrialEntry) -> None:
        """One plain line for an ended trial (lines mode only)."""
        if self.mode != "lines":
            return
        metric = self.spec.search.metric
        shown = "-" if entry.value is None else f"{entry.value:.4g}"
        self._say(
            f"[{self.ended}/{self.total}] {entry.status.value} {entry.cell} "
            f"seed={entry.seed} lr={entry.lr:.3g} {metric}={shown} | cell best {metric} "
            f"{self._best(self.cell(entry.cell))} | {self._counts()} | ETA {self._eta()}"
        )

    def pause(self) -> None:
        """Take the live view off the screen until the next shard (or `finish`) draws it."""
        if self._live is not None:
            self._live.transient = True
            self._live.stop()
            self._live = None

    def finish(self) -> None:
        """Leave the last frame of the live view on the screen."""
        self.pause()
        if self.mode == "live" and self._begun:
            Console(stderr=True).print(self._render())

    def _start_live(self) -> None:
        self._live = Live(
            self._render(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=False,
        )
        self._live.start(refresh=True)
        self._drawn_at = time.monotonic()

    def _total_text(self) -> str:
        """The trials the sweep runs: a count, or `fewest-most` with adaptive seeds."""
        return count_range_text(self.total, self.most)

    def _eta(self) -> str:
        """Time left at this run's pace so far ('?' before its first trial ends); with
        adaptive seeds a range, from no seed added to every primary cell at max."""
        ended_here = self.ended - self._ended_at_start
        fewest, most = (max(total - self.ended, 0) for total in (self.total, self.most))
        if most == 0:
            return "0s"
        if ended_here <= 0:
            return "?"
        pace = (time.monotonic() - self._started) / ended_here
        if fewest == most:
            return duration(pace * most)
        return f"{duration(pace * fewest)}-{duration(pace * most)}"

    def _counts(self) -> str:
        return f"{self.running} running, {self.pending} pending, {self.failed} failed"

    def _best(self, row: CellStatus) -> str:
        """A cell's best value so far and its lr, or '-'."""
        if row.best_value is None:
            return "-"
        return f"{row.best_value:.4g} (lr {row.best_lr:.3g})"

    def _say(self, line: str) -> None:
        if self._live is not None:  # above the live view, which redraws below it
            self._live.console.print(line, highlight=False, markup=False, soft_wrap=True)
            return
        print(line, file=sys.stderr, flush=True)

    def _render(self) -> Group:
        """The live view: a bar with the totals, then the cells whose trials changed last."""
        spec = self.spec
        header = Table.grid(padding=(0, 1))
        header.add_row(
            "[bold]trials",
            ProgressBar(total=max(self.total, 1), completed=self.ended, width=30),
            f"{self.done}/{self.total} done",
        )
        timing = f"elapsed {duration(time.monotonic() - self._started)}, ETA {self._eta()}"
        cells = Table(box=None, padding=(0, 1), show_edge=False)
        for column in ("cell", "done", "running", "pending", "failed"):
            cells.add_column(column, justify="left" if column == "cell" else "right")
        cells.add_column(f"best {spec.search.metric}", justify="right")
        shown = list(self._changed)[-SHOWN_CELLS:]
        for cell_id in shown:
            row = self.cell(cell_id)
            counts = [sum(row.count(status) for status in DONE)]
            counts += [row.count(status) for status in (Status.RUNNING, Status.PENDING)]
            counts.append(row.count(Status.FAILED))
            cells.add_row(cell_id, *(str(count) for count in counts), self._best(row))
        parts: list[Any] = [header, f"{self._counts()}; {timing}", cells]
        quiet = self._cell_count - len(self._changed)
        hidden = len(self._changed) - len(shown)
        if hidden:
            parts.append(f"[dim]{hidden} more cells started, {quiet} not started")
        elif quiet:
            parts.append(f"[dim]{quiet} more cells not started")
        return Group(*parts)


_sweeps: dict[str, SweepProgress] = {}
"""The display of each sweep (by spec file) running in this process."""


def sweep_progress(spec_file: str, spec: SweepSpec, mode: Mode, shard: int | None) -> SweepProgress:
    """The sweep's display, made on first use with what every other shard's index records
    (shard `shard`, if any, is read from its live trials instead)."""
    found = _sweeps.get(spec_file)
    if found is None or found.spec.model_dump() != spec.model_dump():
        found = SweepProgress(spec, mode)
        sweep_dir = sweep_dir_of(spec_file)
        plan = read_plan(sweep_dir)
        for index in range(len(plan.shards) if plan is not None else 1):
            if index != shard:
                found.ledger.record_all(experiment_entries(spec, shard_dir(sweep_dir, index)))
        _sweeps[spec_file] = found
    found.mode = mode
    return found


def finish_progress(spec_file: str) -> None:
    """End the sweep's display in this process (the last frame stays on a terminal)."""
    found = _sweeps.pop(spec_file, None)
    if found is not None:
        found.finish()
