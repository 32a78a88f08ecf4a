"""`train_loop_per_worker`: one DDP rank of a trial, run by Ray Train.

Per epoch: train, evaluate on the validation and test splits, report the epoch's metrics
(all-reduced, identical on every rank) and, from rank 0, a checkpoint holding the whole
training state plus the metric history. A restarted trial resumes from the latest
checkpoint and replays that history in its first report, so the tracker can fill in an
epoch whose checkpoint was written just before the driver died.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
from torch.nn.parallel import DistributedDataParallel

from sparseopt.checkpoint import (
    CheckpointError,
    load_latest_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_payload,
)
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError, evaluate, train_one_epoch
from sparseopt.recipe import Run, build_run
from trainables.checkpoints import previous_checkpoints

logger = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one trial's model on this rank until its epoch budget (see module docstring)."""
    cfg = TrainConfig.model_validate(loop_config["train"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    run = build_run(cfg, rank=rank, world_size=world_size, device=_worker_device())
    model = _wrap_ddp(run, world_size)

    start_epoch, history = _resume(run)
    replay = list(history)
    if start_epoch >= cfg.epochs:
        final = dict(history[-1]) if history else {"epoch": start_epoch}
        ray.train.report({**final, "history": replay, "diverged": False})
        return

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        run.set_epoch(epoch)
        try:
            stats = train_one_epoch(
                model,
                run.train_loader,
                run.optimizer,
                run.scheduler,
                run.device,
                precision=cfg.precision,
                channels_last=cfg.channels_last,
                label_smoothing=cfg.optim.label_smoothing,
            )
        except DivergedError as error:
            logger.warning("trial diverged in epoch %d: %s", epoch, error)
            ray.train.report({"epoch": epoch, "diverged": True, "history": replay})
            return
        metrics = _epoch_metrics(run, model, cfg, epoch, stats)
        history.append(metrics)
        checkpoint_dir = None
        if rank == 0:
            checkpoint_dir = tempfile.mkdtemp(prefix="sparsesweep-ckpt-")
            payload = training_payload(
                model=run.model,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                sparse_state=run.sparse_state,
                epoch=epoch,
                history=history,
            )
            save_checkpoint(checkpoint_dir, payload, keep=1)
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report({**metrics, "history": replay, "diverged": False}, checkpoint=checkpoint)
        replay = []


def _worker_device() -> torch.device:
    if torch.cuda.is_available():
        return ray.train.torch.get_device()
    return torch.device("cpu")


def _wrap_ddp(run: Run, world_size: int) -> torch.nn.Module:
    if world_size == 1:
        return run.model
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    return DistributedDataParallel(run.model, device_ids=device_ids)


def _resume(run: Run) -> tuple[int, list[dict[str, Any]]]:
    """Restore from the trial's latest loadable checkpoint: (completed epochs, history)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as directory:
        payload = _load_with_fallback(Path(directory))
        if payload is None:
            return 0, []
        restore_training_state(
            payload,
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            sparse_state=run.sparse_state,
        )
    logger.info("resumed from epoch %d", payload["epoch"])
    return int(payload["epoch"]), list(payload["history"])


def _load_with_fallback(directory: Path) -> dict[str, Any] | None:
    """The newest good checkpoint: this one, else an older one of the same trial, else none."""
    for candidate in [directory, *previous_checkpoints(directory)]:
        try:
            payload = load_latest_checkpoint(candidate)
        except CheckpointError as error:
            logger.warning("skipping corrupted checkpoint %s: %s", candidate, error)
            continue
        if payload is not None:
            return payload
    logger.warning(
        "no loadable checkpoint next to %s; restarting the trial from scratch", directory
    )
    return None


def _epoch_metrics(
    run: Run, model: torch.nn.Module, cfg: TrainConfig, epoch: int, stats: Any
) -> dict[str, Any]:
    """The epoch's metrics (docs/conventions.md), identical on every rank."""
    metrics: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_acc1": stats.acc1,
        "lr": run.optimizer.param_groups[0]["lr"],
        "sparsity": run.sparse_state.sparsity() if run.sparse_state is not None else 0.0,
        "itop_rate": run.sparse_state.itop_rate() if run.sparse_state is not None else 1.0,
        "epoch_time_s": stats.time_s,
        "samples_per_s": stats.samples / max(stats.time_s, 1e-9),
    }
    for split, loader in (("val", run.val_loader), ("test", run.test_loader)):
        result = evaluate(
            model, loader, run.device, precision=cfg.precision, channels_last=cfg.channels_last
        )
        if result is not None:
            metrics[f"{split}_loss"] = result.loss
            metrics[f"{split}_acc1"] = result.acc1
            metrics[f"{split}_acc5"] = result.acc5
    return metrics
