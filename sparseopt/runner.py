"""One training run in-process (no Ray): train, evaluate, log `metrics.jsonl`, checkpoint, resume.

Output directory layout: `config.yaml` (the fully resolved config, written before training),
`metrics.jsonl` (one JSON object per completed epoch, keys of docs/conventions.md),
`checkpoints/ckpt-<epoch>.pt` (+ `.sha256`). Running again on the same directory resumes
from the latest good checkpoint and continues bit-for-bit (on CPU) as if never interrupted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sparseopt.checkpoint import (
    load_latest_checkpoint,
    save_checkpoint,
    write_atomic,
)
from sparseopt.config import TrainConfig
from sparseopt.recipe import Run, build_run, restore_run, run_payload, train_and_evaluate

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


def _metrics_line(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, sort_keys=False) + "\n"


def _train_epoch(run: Run, epoch: int, progress: Progress | None) -> dict[str, Any]:
    """Train and evaluate epoch `epoch` (0-based) with a per-step progress bar."""
    if progress is None:
        return train_and_evaluate(run, epoch)
    task = progress.add_task(f"epoch {epoch + 1}/{run.cfg.epochs}", total=run.steps_per_epoch)
    try:
        return train_and_evaluate(run, epoch, on_step=lambda _: progress.advance(task))
    finally:
        progress.remove_task(task)


def _describe(metrics: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"train_loss {metrics['train_loss']:.4f}"]
    for key in ("train_acc1", "val_acc1", "test_acc1"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.2f}")
    parts += [
        f"lr {metrics['lr']:.3g}",
        f"sparsity {metrics['sparsity']:.4f}",
        f"{metrics['epoch_time_s']:.1f}s",
    ]
    return "  ".join(parts)


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
    run = build_run(cfg)  # bad data or sparse settings fail here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    _write_config(cfg, out)
    payload = load_latest_checkpoint(out / CHECKPOINT_DIR)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if payload is not None:
        start_epoch, history = restore_run(run, payload)
    write_atomic(out / METRICS_FILE, "".join(_metrics_line(m) for m in history).encode())
    stop = cfg.epochs if until_epoch is None else min(cfg.epochs, until_epoch)
    console = Console(quiet=not progress)
    if start_epoch:
        console.print(f"resuming {out} after epoch {start_epoch}", highlight=False)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        for epoch in range(start_epoch, stop):
            metrics = _train_epoch(run, epoch, bar if progress else None)
            history.append(metrics)
            save_checkpoint(
                out / CHECKPOINT_DIR,
                run_payload(run, epoch + 1, history, extra={"config_hash": cfg.config_hash()}),
                keep=cfg.keep_checkpoints,
            )
            with open(out / METRICS_FILE, "a") as handle:
                handle.write(_metrics_line(metrics))
            console.print(_describe(metrics, cfg.epochs), highlight=False)
    return RunResult(out, history, start_epoch)
