"""What the sessions of both trial executors share (`sparseopt.loop.TrainingSession`).

A trial runs the library's one epoch loop (`sparseopt.loop.run_epochs`) inside Tune's trial
actor (`trainables.actor`) or on Ray Train's DDP workers (`trainables.worker`). Both resume from
the newest loadable checkpoint among those the trial left, fire the fault tests' planned fault
(`trainables.faults`), and hand Ray a checkpoint as a directory: the payload is staged in a
temporary directory for the length of the report.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import ray.train

from sparseopt.checkpoint import save_checkpoint
from trainables.checkpoints import load_newest
from trainables.faults import fault_hook

TEMP_PREFIX = "sparsesweep-ckpt-"


class RaySession(ABC):
    """The part of a trial's session both executors share; subclasses say where the trial's
    checkpoints are (`checkpoint_candidates`) and how a report leaves (`deliver`)."""

    rank: int
    world_size: int

    def __init__(self, config_hash: str) -> None:
        self._config_hash = config_hash

    @abstractmethod
    def checkpoint_candidates(self) -> list[ray.train.Checkpoint]:
        """The trial's stored checkpoints, newest first."""

    @abstractmethod
    def deliver(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Send one report to Tune, with the checkpoint in `checkpoint_dir` (rank 0) if any."""

    def load_checkpoint(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The newest checkpoint that loads, and a line per corrupted one skipped."""
        return load_newest(self.checkpoint_candidates())

    def step_hook(self, epoch: int, steps: int) -> Callable[[int], None] | None:
        """The fault planned for this trial's `epoch` (tests only; None otherwise)."""
        return fault_hook(self._config_hash, epoch, self.rank)

    def report(self, result: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        """`deliver` the result, with `checkpoint` staged as a directory for the call."""
        if checkpoint is None:
            self.deliver(result, None)
            return
        directory = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        try:
            save_checkpoint(directory, checkpoint, keep=1)
            self.deliver(result, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
