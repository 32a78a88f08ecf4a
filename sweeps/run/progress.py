"""Live progress of a sweep in the driver, fed by Tune's callback hooks.

One display: trials done / running / pending / failed against the spec's total, the elapsed
time and an ETA, and per cell its counts and best value so far. Counts and best values come
from `sweeps.run.status.cell_statuses` (the rule `sparsesweep status` and MLflow use), so a resumed
sweep starts from what is already done. On a terminal it redraws in place; otherwise (a pipe,
a file, CI) it prints one plain line per ended trial.

The display mode comes from the environment (`PROGRESS_ENV`, set by `launch.run_sweep`)
rather than the callback: Tune restores a resumed sweep's callbacks from its first start,
so only the environment reflects the command running now.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Literal, TextIO

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from contract.outcome import Status
from contract.trial import TrialMeta
from sweeps.run.status import cell_statuses
from sweeps.run.tune_state import trial_status, tune_retries
from sweeps.spec.load import read_spec_file
from sweeps.spec.schema import SweepSpec

Mode = Literal["live", "lines", "off"]
PROGRESS_ENV = "SPARSESWEEP_PROGRESS"
"""How the driver shows progress: `live` (redraw in place), `lines` (a line per ended trial)
or `off`; unset means off."""
MODES: tuple[str, ...] = ("live", "lines", "off")
DONE = (Status.FINISHED, Status.STOPPED, Status.DIVERGED)
"""Statuses shown as done (the trial ran to an end and has a result); failed is its own column."""


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


SNAPSHOT_S = 1.0
"""At most one snapshot (a pass over every trial) per this many seconds of Tune's loop."""


class Snapshot:
    """The sweep's per-cell counts at one moment, and the totals of the four columns."""

    def __init__(self, spec: SweepSpec, trials: list[Any]) -> None:
        self.rows = cell_statuses(spec, trials)
        self.done = sum(row.count(status) for row in self.rows for status in DONE)
        self.running = sum(row.count(Status.RUNNING) for row in self.rows)
        self.pending = sum(row.count(Status.PENDING) for row in self.rows)
        self.failed = sum(row.count(Status.FAILED) for row in self.rows)

    @property
    def ended(self) -> int:
        """Trials that ended (done or failed)."""
        return self.done + self.failed

    def cell(self, cell_id: str) -> Any:
        """The row of one cell."""
        return next(row for row in self.rows if row.cell_id == cell_id)


class RichProgressCallback(Callback):
    """The sweep's progress display (see the module docstring); its only state is the path of
    the spec file the sweep runs under, read at setup."""

    def __init__(self, spec_file: str) -> None:
        self._spec_file = spec_file
        self._spec: SweepSpec | None = None
        self._mode: Mode = "off"
        self._live: Live | None = None
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0
        self._started = time.monotonic()
        self._ended_at_start = 0
        self._dirty = True
        self._just_ended: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"_spec_file": self._spec_file}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_spec_file"])

    def setup(self, **info: Any) -> None:
        mode = os.environ.get(PROGRESS_ENV, "off")
        self._mode = mode if mode in MODES else "off"  # type: ignore[assignment]
        self._spec = read_spec_file(self._spec_file) if self._mode != "off" else None
        if self._spec is None:
            self._mode = "off"
        self._started = time.monotonic()

    # ----------------------------------------------------------------- Tune hooks
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._mode == "off" or not self._dirty:
            return
        if self._snapshot is not None and time.monotonic() - self._snapshot_at < SNAPSHOT_S:
            return  # a snapshot reads every trial: at most one per SNAPSHOT_S
        first = self._snapshot is None
        self._snapshot = Snapshot(self._spec, trials)  # type: ignore[arg-type]
        self._snapshot_at = time.monotonic()
        self._dirty = False
        if first:
            self._begin()
        for trial in self._just_ended:
            self._print_line(trial)
        self._just_ended = []
        if self._live is not None:
            self._live.refresh()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._dirty = True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._dirty = True
        self._snapshot_at = -math.inf  # not 0.0: time.monotonic() counts from boot
        self.on_step_begin(0, trials)
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ----------------------------------------------------------------- display
    def _ended(self, trial: Any) -> None:
        """Note an ended trial; Tune sets its final status after this hook, so it is counted
        (and its line printed) at the next step."""
        self._dirty = True
        self._just_ended.append(trial)

    def _begin(self) -> None:
        """Start the live display, or say where a resumed sweep stands."""
        snapshot, spec = self._snapshot, self._spec
        assert snapshot is not None and spec is not None
        self._ended_at_start = snapshot.ended
        self._started = time.monotonic()
        total = spec.expected_trials()
        if self._mode == "live":
            self._live = Live(
                get_renderable=self._render,
                console=Console(stderr=True),
                refresh_per_second=1,
                transient=False,
            )
            self._live.start()
        elif snapshot.ended:
            self._say(f"sweep {spec.name}: {snapshot.ended}/{total} trials already ended")
        else:
            self._say(f"sweep {spec.name}: {total} trials to run")

    def _eta(self) -> str:
        """Time left at this run's pace so far ('?' before its first trial ends)."""
        snapshot, spec = self._snapshot, self._spec
        assert snapshot is not None and spec is not None
        ended_here = snapshot.ended - self._ended_at_start
        remaining = max(spec.expected_trials() - snapshot.ended, 0)
        if remaining == 0:
            return "0s"
        if ended_here <= 0:
            return "?"
        return duration((time.monotonic() - self._started) / ended_here * remaining)

    def _counts(self) -> str:
        snapshot = self._snapshot
        assert snapshot is not None
        return f"{snapshot.running} running, {snapshot.pending} pending, {snapshot.failed} failed"

    def _best(self, row: Any) -> str:
        """A cell's best value so far and its lr, or '-'."""
        if row.best_value is None:
            return "-"
        return f"{row.best_value:.4g} (lr {row.best_lr:.3g})"

    def _print_line(self, trial: Any) -> None:
        """One plain line for an ended trial (lines mode only)."""
        if self._mode != "lines":
            return
        snapshot, spec = self._snapshot, self._spec
        assert snapshot is not None and spec is not None
        meta = TrialMeta.of(trial.config)
        metric = spec.search.metric
        value = (trial.last_result or {}).get(metric)
        shown = "-" if value is None else f"{value:.4g}"
        status = trial_status(trial, tune_retries(spec)).value
        self._say(
            f"[{snapshot.ended}/{spec.expected_trials()}] {status} {meta.cell} seed={meta.seed} "
            f"lr={meta.lr:.3g} {metric}={shown} | cell best {metric} "
            f"{self._best(snapshot.cell(meta.cell))} | {self._counts()} | ETA {self._eta()}"
        )

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _render(self) -> Group:
        """The live view: a bar with the totals, then a row per cell that has started."""
        snapshot, spec = self._snapshot, self._spec
        assert snapshot is not None and spec is not None
        total = spec.expected_trials()
        header = Table.grid(padding=(0, 1))
        header.add_row(
            "[bold]trials",
            ProgressBar(total=max(total, 1), completed=snapshot.ended, width=30),
            f"{snapshot.done}/{total} done",
        )
        timing = f"elapsed {duration(time.monotonic() - self._started)}, ETA {self._eta()}"
        cells = Table(box=None, padding=(0, 1), show_edge=False)
        for column in ("cell", "done", "running", "pending", "failed"):
            cells.add_column(column, justify="left" if column == "cell" else "right")
        cells.add_column(f"best {spec.search.metric}", justify="right")
        quiet = 0
        for row in snapshot.rows:
            if row.count(Status.PENDING) == row.expected:
                quiet += 1
                continue
            counts = [sum(row.count(status) for status in DONE)]
            counts += [row.count(status) for status in (Status.RUNNING, Status.PENDING)]
            counts.append(row.count(Status.FAILED))
            cells.add_row(row.cell_id, *(str(count) for count in counts), self._best(row))
        parts: list[Any] = [header, f"{self._counts()}; {timing}", cells]
        if quiet:
            parts.append(f"[dim]{quiet} more cells not started")
        return Group(*parts)
