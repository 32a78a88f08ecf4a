"""The training loop of one trial, the same on both executors (Ray Train workers or Tune's actor).

Per epoch: train, evaluate on the validation and test splits, report the epoch's metrics
(all-reduced, identical on every rank) and, from rank 0, a checkpoint holding the whole
training state plus the metric history. A restarted trial resumes from its newest loadable
checkpoint and replays that history in its first report, so the tracker can fill in an epoch
whose checkpoint was written just before the driver died. Every report of an attempt also says
where the attempt started (`resumed_from_epoch`, 0 for a fresh start) and which corrupted
checkpoints it skipped (`skipped_checkpoints`): a fallback to an older checkpoint or a restart
from scratch is never silent. A non-finite loss ends the trial with one `diverged` report.

Only the `TrialSession` differs between executors: where the trial runs (rank, world size,
device), which checkpoints it may resume from, and how a report and its checkpoint leave.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.distributed as dist

from contract.names import SPLIT_METRICS
from contract.trial import ResultKey, TrialMeta, train_payload
from sparseopt.checkpoint import save_checkpoint
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError
from sparseopt.recipe import Run, build_run, restore_run, run_payload, train_and_evaluate
from trainables.checkpoints import load_newest
from trainables.faults import fault_hook

logger = logging.getLogger(__name__)


class TrialSession(Protocol):
    """Where a trial runs and how it reports: the one part the two executors do differently."""

    rank: int
    world_size: int

    def device(self) -> torch.device:
        """The device this rank trains on."""
        ...

    def checkpoint_candidates(self) -> list[Any]:
        """The trial's stored checkpoints (`ray.train.Checkpoint`), newest first."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Send one report to Tune, with the checkpoint in `checkpoint_dir` (rank 0) if any."""
        ...


def run_trial_loop(config: Mapping[str, Any], session: TrialSession) -> None:
    """Train one trial to its epoch budget, resuming from its newest loadable checkpoint."""
    cfg = TrainConfig.model_validate(train_payload(config))
    meta = TrialMeta.of(config)
    run = build_run(cfg, rank=session.rank, world_size=session.world_size, device=session.device())
    start_epoch, history, resume = _resume(run, session)
    resume[ResultKey.STEPS_PER_EPOCH] = run.steps_per_epoch
    replay = list(history)
    if start_epoch >= cfg.epochs:
        final = dict(history[-1]) if history else {ResultKey.EPOCH: start_epoch}
        session.report(
            {**final, **resume, ResultKey.HISTORY: replay, ResultKey.DIVERGED: False}, None
        )
        return

    for epoch in range(start_epoch, cfg.epochs):
        on_step = fault_hook(meta.config_hash, epoch, session.rank)
        try:
            metrics = train_and_evaluate(run, epoch, on_step=on_step)
        except DivergedError as error:
            logger.warning("trial diverged in epoch %d: %s", epoch + 1, error)
            # NaN, not absent: Tune rejects a result without the searched metric (failing the
            # whole sweep); the searcher and the report score a diverged trial themselves.
            nan = dict.fromkeys(SPLIT_METRICS, float("nan"))
            session.report(
                {
                    ResultKey.EPOCH: epoch + 1,
                    **nan,
                    **resume,
                    ResultKey.HISTORY: replay,
                    ResultKey.DIVERGED: True,
                },
                None,
            )
            return
        metrics[ResultKey.MASKS_IN_SYNC] = masks_in_sync(run.sparse_state.masks)
        history.append(metrics)
        checkpoint_dir = None
        if session.rank == 0:
            checkpoint_dir = tempfile.mkdtemp(prefix="sparsesweep-ckpt-")
            save_checkpoint(checkpoint_dir, run_payload(run, epoch + 1, history), keep=1)
        try:
            session.report(
                {**metrics, **resume, ResultKey.HISTORY: replay, ResultKey.DIVERGED: False},
                checkpoint_dir,
            )
        finally:
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


def _resume(run: Run, session: TrialSession) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore from the trial's newest loadable checkpoint.

    Returns the completed epochs, the metric history, and the attempt's resume keys
    (`resumed_from_epoch`, `skipped_checkpoints`) that every report carries.
    """
    payload, skipped = load_newest(session.checkpoint_candidates())
    if payload is None:
        if skipped:
            logger.warning("no loadable checkpoint left; restarting the trial from scratch")
        return 0, [], {ResultKey.RESUMED_FROM_EPOCH: 0, ResultKey.SKIPPED_CHECKPOINTS: skipped}
    epoch, history = restore_run(run, payload)
    logger.info("resumed from epoch %d", epoch)
    return (
        epoch,
        history,
        {ResultKey.RESUMED_FROM_EPOCH: epoch, ResultKey.SKIPPED_CHECKPOINTS: skipped},
    )
