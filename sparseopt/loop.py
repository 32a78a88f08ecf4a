"""The one epoch loop: `sparsesweep train`, Tune's trial actor and Ray Train's DDP workers run it.

Per epoch: train, evaluate on the validation and test splits, report the epoch's metrics
(all-reduced, identical on every rank) and, from rank 0, a checkpoint payload holding the whole
training state plus the metric history. A restarted run resumes from its newest loadable
checkpoint and replays that history in its first report, so a tracker can fill in an epoch
whose checkpoint was written just before its driver died. Every report also says where the
attempt started (`resumed_from_epoch`, 0 for a fresh start) and which corrupted checkpoints it
skipped (`skipped_checkpoints`): a fallback to an older checkpoint or a restart from scratch is
never silent. A non-finite loss ends the run with one `diverged` report. Report keys:
`contract.trial.ResultKey` plus the epoch metrics (docs/conventions.md).

Only the `TrainingSession` differs between the places the loop runs: the rank, world size and
device, where checkpoints come from, and where a report and its checkpoint go. This module
imports no ray: the sessions of the trial executors live in `trainables`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist

from contract.names import SPLIT_METRICS
from contract.trial import ResultKey
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError
from sparseopt.recipe import build_run, restore_run, run_payload, train_and_evaluate

logger = logging.getLogger(__name__)


class TrainingSession(Protocol):
    """Where the loop runs and where its reports go."""

    rank: int
    world_size: int

    def device(self) -> torch.device:
        """The device this rank trains on."""
        ...

    def load_checkpoint(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The newest loadable checkpoint payload (None: start from scratch) and one
        `path: problem` line per corrupted checkpoint skipped on the way. Called once, after
        the run is built (so a bad config or dataset fails before the session writes anything)."""
        ...

    def step_hook(self, epoch: int, steps: int) -> Callable[[int], None] | None:
        """What to call after each of the `steps` optimizer steps of 0-based `epoch` (a progress
        bar, the fault tests' injection), or None."""
        ...

    def report(self, result: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        """Deliver one report; `checkpoint` is the epoch's payload (rank 0 only, else None), to
        be stored before the report is delivered."""
        ...


@dataclass(frozen=True)
class LoopOutcome:
    """How the loop ended: the metric history, the epoch it resumed from (0 = fresh) and, when
    the loss became non-finite, the `DivergedError` message."""

    history: list[dict[str, Any]]
    resumed_from_epoch: int
    diverged: str | None = None


def run_epochs(
    cfg: TrainConfig, session: TrainingSession, until_epoch: int | None = None
) -> LoopOutcome:
    """Train `cfg` to its epoch budget (or to `until_epoch` completed epochs), resuming from the
    session's newest loadable checkpoint; every epoch is reported through `session`."""
    run = build_run(cfg, rank=session.rank, world_size=session.world_size, device=session.device())
    payload, skipped = session.load_checkpoint()
    start_epoch, history = (0, []) if payload is None else restore_run(run, payload)
    if payload is None and skipped:
        logger.warning("no loadable checkpoint left; restarting from scratch")
    elif payload is not None:
        logger.info("resumed from epoch %d", start_epoch)
    resume = {
        ResultKey.RESUMED_FROM_EPOCH: start_epoch,
        ResultKey.SKIPPED_CHECKPOINTS: skipped,
        ResultKey.STEPS_PER_EPOCH: run.steps_per_epoch,
    }
    replay = list(history)
    stop = cfg.epochs if until_epoch is None else min(cfg.epochs, until_epoch)
    if start_epoch >= stop:
        final = dict(history[-1]) if history else {ResultKey.EPOCH: start_epoch}
        session.report(
            {**final, **resume, ResultKey.HISTORY: replay, ResultKey.DIVERGED: False}, None
        )
        return LoopOutcome(history, start_epoch)

    for epoch in range(start_epoch, stop):
        try:
            metrics = train_and_evaluate(
                run, epoch, on_step=session.step_hook(epoch, run.steps_per_epoch)
            )
        except DivergedError as error:
            logger.warning("diverged in epoch %d: %s", epoch + 1, error)
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
            return LoopOutcome(history, start_epoch, diverged=str(error))
        history.append(metrics)
        checkpoint = None
        if session.rank == 0:
            extra = {"config_hash": cfg.config_hash()}
            checkpoint = run_payload(run, epoch + 1, history, extra=extra)
        in_sync = masks_in_sync(run.sparse_state.masks)
        session.report(
            {
                **metrics,
                ResultKey.MASKS_IN_SYNC: in_sync,
                **resume,
                ResultKey.HISTORY: replay,
                ResultKey.DIVERGED: False,
            },
            checkpoint,
        )
        replay = []
    return LoopOutcome(history, start_epoch)


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
