"""`train_loop_per_worker`: one DDP rank of a trial, run by Ray Train.

Per epoch: train, evaluate on the validation and test splits, report the epoch's metrics
(all-reduced, identical on every rank) and, from rank 0, a checkpoint holding the whole
training state plus the metric history. A restarted trial resumes from the latest
checkpoint and replays that history in its first report, so the tracker can fill in an
epoch whose checkpoint was written just before the driver died.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sparseopt.checkpoint import (
    CheckpointError,
    load_latest_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_payload,
)
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError
from sparseopt.recipe import Run, build_run, train_and_evaluate
from trainables.checkpoints import previous_checkpoints

logger = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one trial's model on this rank until its epoch budget (see module docstring)."""
    cfg = TrainConfig.model_validate(loop_config["train"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    run = build_run(cfg, rank=rank, world_size=world_size, device=_worker_device())

    start_epoch, history = _resume(run)
    replay = list(history)
    if start_epoch >= cfg.epochs:
        final = dict(history[-1]) if history else {"epoch": start_epoch}
        ray.train.report({**final, "history": replay, "diverged": False})
        return

    for epoch in range(start_epoch, cfg.epochs):
        try:
            metrics = train_and_evaluate(run, epoch)
        except DivergedError as error:
            logger.warning("trial diverged in epoch %d: %s", epoch + 1, error)
            ray.train.report({"epoch": epoch + 1, "diverged": True, "history": replay})
            return
        metrics["masks_in_sync"] = masks_in_sync(run.sparse_state.masks)
        history.append(metrics)
        checkpoint_dir = None
        if rank == 0:
            checkpoint_dir = tempfile.mkdtemp(prefix="sparsesweep-ckpt-")
            payload = training_payload(
                model=run.module,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                sparse_state=run.sparse_state,
                epoch=epoch + 1,
                history=history,
            )
            save_checkpoint(checkpoint_dir, payload, keep=1)
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report({**metrics, "history": replay, "diverged": False}, checkpoint=checkpoint)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        replay = []


def masks_in_sync(masks: dict[str, torch.Tensor]) -> bool:
    """True when every rank holds exactly the same masks (compared by digest across ranks)."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        digest.update(name.encode())
        digest.update(masks[name].cpu().numpy().tobytes())
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    gathered: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digest.hexdigest())
    return len(set(gathered)) == 1


def _worker_device() -> torch.device:
    if torch.cuda.is_available():
        return ray.train.torch.get_device()
    return torch.device("cpu")


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
            model=run.module,
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
