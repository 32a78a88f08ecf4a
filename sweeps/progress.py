"""Live terminal progress of a sweep (a rich progress bar fed by Tune's callbacks)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweeps.spec import read_spec_file


class RichProgressCallback(Callback):
    """Trials ended out of the expected total, plus how many run or failed.

    The total comes from the spec file the sweep runs under, read at setup, so a restored
    (and possibly extended) sweep counts against its current spec.
    """

    def __init__(self, spec_file: str, enabled: bool = True) -> None:
        self._spec_file = spec_file
        self._total = 0
        self._enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._ended: set[str] = set()
        self._running: set[str] = set()
        self._failed = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_progress"] = None
        state["_task"] = None
        return state

    def setup(self, **info: Any) -> None:
        spec = read_spec_file(self._spec_file)
        self._total = spec.expected_trials() if spec is not None else 0
        if not self._enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("sweep", total=self._total, detail="")
        self._progress.start()

    def _refresh(self) -> None:
        if self._progress is None:
            return
        detail = f"running {len(self._running)}  failed {self._failed}"
        self._progress.update(
            self._task, total=self._total, completed=len(self._ended), detail=detail
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed += 1
        self._end(trial)

    def _end(self, trial: Any) -> None:
        self._running.discard(trial.trial_id)
        self._ended.add(trial.trial_id)
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None
