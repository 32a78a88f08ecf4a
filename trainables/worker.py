"""`train_loop_per_worker`: one DDP rank of a trial, run by Ray Train.

Per epoch: train, evaluate on the validation and test splits, report the epoch's metrics
(all-reduced, identical on every rank) and, from rank 0, a checkpoint holding the whole
training state plus the metric history. A restarted trial resumes from the latest
checkpoint and replays that history in its first report, so the tracker can fill in an
epoch whose checkpoint was written just before the driver died. Every report of an attempt
also says where the attempt started (`resumed_from_epoch`, 0 for a fresh start) and which
corrupted checkpoints it skipped (`skipped_checkpoints`), so a fallback to an older checkpoint
or a restart from scratch is never silent.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sparseopt.checkpoint import save_checkpoint
from sparseopt.config import TrainConfig
from sparseopt.engine import SPLIT_METRICS, DivergedError
from sparseopt.recipe import Run, build_run, restore_run, run_payload, train_and_evaluate
from trainables.checkpoints import load_newest, resume_candidates
from trainables.faults import fault_hook

logger = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one trial's model on this rank until its epoch budget (see module docstring)."""
    cfg = TrainConfig.model_validate(loop_config["train"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    run = build_run(cfg, rank=rank, world_size=world_size, device=_worker_device())

    config_hash = str(loop_config["meta"]["config_hash"])
    start_epoch, history, resume = _resume(run)
    replay = list(history)
    if start_epoch >= cfg.epochs:
        final = dict(history[-1]) if history else {"epoch": start_epoch}
        ray.train.report({**final, **resume, "history": replay, "diverged": False})
        return

    for epoch in range(start_epoch, cfg.epochs):
        try:
            metrics = train_and_evaluate(run, epoch, on_step=fault_hook(config_hash, epoch, rank))
        except DivergedError as error:
            logger.warning("trial diverged in epoch %d: %s", epoch + 1, error)
            # NaN, not absent: Tune rejects a result without the searched metric (failing the
            # whole sweep); the searcher and the report score a diverged trial themselves.
            nan = dict.fromkeys(SPLIT_METRICS, float("nan"))
            ray.train.report(
                {"epoch": epoch + 1, **nan, **resume, "history": replay, "diverged": True}
            )
            return
        metrics["masks_in_sync"] = masks_in_sync(run.sparse_state.masks)
        history.append(metrics)
        checkpoint_dir = None
        if rank == 0:
            checkpoint_dir = tempfile.mkdtemp(prefix="sparsesweep-ckpt-")
            save_checkpoint(checkpoint_dir, run_payload(run, epoch + 1, history), keep=1)
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(
            {**metrics, **resume, "history": replay, "diverged": False}, checkpoint=checkpoint
        )
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


def _resume(run: Run) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore from the trial's newest loadable checkpoint.

    Returns the completed epochs, the metric history, and the attempt's resume keys
    (`resumed_from_epoch`, `skipped_checkpoints`) that every report carries.
    """
    storage = ray.train.get_context().get_storage()
    payload, skipped = load_newest(resume_candidates(storage, ray.train.get_checkpoint()))
    if payload is None:
        if skipped:
            logger.warning("no loadable checkpoint left; restarting the trial from scratch")
        return 0, [], {"resumed_from_epoch": 0, "skipped_checkpoints": skipped}
    epoch, history = restore_run(run, payload)
    logger.info("resumed from epoch %d", epoch)
    return (
        epoch,
        history,
        {"resumed_from_epoch": epoch, "skipped_checkpoints": skipped},
    )
