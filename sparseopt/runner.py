"""One training run in-process (no Ray): the epoch loop with a session that writes a directory.

Output directory layout: `config.yaml` (the fully resolved config, written once the run is
built), `metrics.jsonl` (one JSON object per completed epoch, the epoch metrics of
docs/conventions.md), `checkpoints/ckpt-<epoch>.pt` (+ `.sha256`). Running again on the same
directory resumes from the latest good checkpoint and continues bit-for-bit (on CPU) as if never
interrupted. The loop is `sparseopt.loop.run_epochs`, the one the trial executors run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from sparseopt.checkpoint import load_latest_checkpoint, save_checkpoint, write_atomic
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError
from sparseopt.loop import run_epochs
from sparseopt.recipe import resolve_device

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class RunResult:
    """Where the run lives, its per-epoch metrics, and the epoch it resumed from (0 = fresh)."""

    out_dir: Path
    history: list[dict[str, Any]]
    resumed_from_epoch: int


def _check_existing_config(cfg: TrainConfig, out_dir: Path) -> None:
    """Refuse to resume a directory whose config.yaml holds a different config."""
    path = out_dir / CONFIG_FILE
    if path.exists():
        existing = TrainConfig.model_validate(yaml.safe_load(path.read_text()) or {})
        if existing.config_hash() != cfg.config_hash():
            raise ValueError(
                f"--out {out_dir} already holds a run with a different config "
                f"(hash {existing.config_hash()} != {cfg.config_hash()}); use a new output directory"
            )


def _write_config(cfg: TrainConfig, out_dir: Path) -> None:
    """Write the fully resolved config as config.yaml (once per run directory)."""
    path = out_dir / CONFIG_FILE
    if not path.exists():
        write_atomic(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())


def _metrics_lines(history: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(metrics) + "\n" for metrics in history).encode()


def _describe(metrics: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"train_loss {metrics['train_loss']:.4f}"]
    for key in ("train_acc1", "val_acc1", "test_acc1"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.2f}")
    parts += [
        f"lr {metrics['epoch_lr']:.3g}",
        f"sparsity {metrics['measured_sparsity']:.4f}",
        f"{metrics['epoch_time_s']:.1f}s",
    ]
    return "  ".join(parts)


class DirectorySession:
    """`TrainingSession` of a run in this process writing `out_dir` (rank 0 of 1): checkpoints
    and metrics.jsonl there, a progress bar per epoch and a line per epoch on `console`."""

    rank = 0
    world_size = 1

    def __init__(
        self, cfg: TrainConfig, out_dir: Path, console: Console, progress: Progress | None
    ) -> None:
        self._cfg = cfg
        self._out = out_dir
        self._console = console
        self._progress = progress
        self._task: TaskID | None = None

    def device(self) -> torch.device:
        """`cfg.device` ("auto": CUDA when available)."""
        return resolve_device(self._cfg)

    def load_checkpoint(self) -> tuple[dict[str, Any] | None, list[str]]:
        """Write config.yaml (first run only), load the newest good checkpoint (a corrupted newer
        one is skipped with a RuntimeWarning; `CheckpointError` if none loads) and rewrite
        metrics.jsonl with its history."""
        self._out.mkdir(parents=True, exist_ok=True)
        _write_config(self._cfg, self._out)
        payload = load_latest_checkpoint(self._out / CHECKPOINT_DIR)
        history = [] if payload is None else payload["history"]
        write_atomic(self._out / METRICS_FILE, _metrics_lines(history))
        if payload is not None:
            message = f"resuming {self._out} after epoch {payload['epoch']}"
            self._console.print(message, highlight=False)
        return payload, []

    def step_hook(self, epoch: int, steps: int) -> Callable[[int], None] | None:
        """Advance a progress bar of the epoch's steps (none without progress output)."""
        if self._progress is None:
            return None
        progress = self._progress
        self._task = progress.add_task(f"epoch {epoch + 1}/{self._cfg.epochs}", total=steps)
        task = self._task
        return lambda _: progress.advance(task)

    def report(self, result: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        """Store the epoch's checkpoint, append its metrics to metrics.jsonl and print its line
        (a report without a checkpoint adds nothing: no epoch was completed)."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if checkpoint is None:
            return
        metrics = checkpoint["history"][-1]
        save_checkpoint(self._out / CHECKPOINT_DIR, checkpoint, keep=self._cfg.keep_checkpoints)
        with open(self._out / METRICS_FILE, "ab") as handle:
            handle.write(_metrics_lines([metrics]))
        self._console.print(_describe(metrics, self._cfg.epochs), highlight=False)


def run_training(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    until_epoch: int | None = None,
) -> RunResult:
    """Train `cfg` into `out_dir`, resuming from its latest checkpoint if there is one.

    `until_epoch` stops after that many completed epochs (time-sliced jobs, preemption tests);
    calling again later continues the same run. Raises `DivergedError` on a non-finite loss.
    """
    out = Path(out_dir)
    _check_existing_config(cfg, out)
    console = Console(quiet=not progress)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        session = DirectorySession(cfg, out, console, bar if progress else None)
        outcome = run_epochs(cfg, session, until_epoch=until_epoch)
    if outcome.diverged is not None:
        raise DivergedError(outcome.diverged)
    return RunResult(out, outcome.history, outcome.resumed_from_epoch)
