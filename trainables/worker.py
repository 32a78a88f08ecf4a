"""`train_loop_per_worker`: one DDP rank of a trial on the Ray Train executor.

The loop itself is `sparseopt.loop.run_epochs`; this module is its Ray Train session: rank and
world size from the Train context, the device Train assigns, checkpoints Train hands over plus
every one stored in the trial's run directory, and `ray.train.report` (a barrier on every rank;
rank 0 passes the checkpoint).
"""

from __future__ import annotations

from typing import Any

import ray.train
import ray.train.torch
import torch

from contract.trial import TrialMeta, train_payload
from sparseopt.config import TrainConfig
from sparseopt.loop import run_epochs
from trainables.checkpoints import resume_candidates
from trainables.session import RaySession


class RayTrainSession(RaySession):
    """`TrainingSession` of one Ray Train worker."""

    def __init__(self, config_hash: str) -> None:
        super().__init__(config_hash)
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def device(self) -> torch.device:
        """The GPU Ray Train assigned to this worker, else the CPU."""
        if torch.cuda.is_available():
            return ray.train.torch.get_device()
        return torch.device("cpu")

    def checkpoint_candidates(self) -> list[ray.train.Checkpoint]:
        """Every checkpoint in the trial's run directory, plus the one Train handed over."""
        storage = ray.train.get_context().get_storage()
        return resume_candidates(storage, ray.train.get_checkpoint())

    def deliver(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        """`ray.train.report` (Train persists the checkpoint, then Tune gets rank 0's metrics)."""
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(result, checkpoint=checkpoint)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one trial's model on this rank until its epoch budget (`run_epochs`)."""
    cfg = TrainConfig.model_validate(train_payload(loop_config))
    run_epochs(cfg, RayTrainSession(TrialMeta.of(loop_config).config_hash))
