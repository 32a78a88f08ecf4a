"""The actor executor: a one-worker trial trains inside Tune's trial actor itself.

Ray Train starts a controller and worker processes for every `fit()` (~10 s on 2 CPUs, each
importing torch); a trial with one worker needs none of them. With `reuse_actors`, Tune keeps
the trial actor alive between trials, so torch, the code and the data files are loaded once.
The loop is the same as on Ray Train (`sparseopt.loop.run_epochs`); only the session differs:
rank 0 of 1, the GPU Tune assigned to the actor (if any), and checkpoints written by the trial itself
to the same place and in the same format as Ray Train's (`<train_runs>/trial-<hash>/
checkpoint_<time>/`), so resume, `sparsesweep fanin` and the fault handling see one layout.
A killed actor fails the trial attempt; Tune retries it (`FailureConfig.max_failures`) and
the new attempt resumes from the newest loadable checkpoint.
"""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Any

import pyarrow.fs
import ray.train
import ray.tune
import torch

from contract.trial import ResultKey, TrialMeta, train_payload
from sparseopt.config import TrainConfig
from sparseopt.loop import run_epochs
from trainables.checkpoints import RAY_CHECKPOINT_PREFIX, run_directory, stored_checkpoints
from trainables.runtime import TrialRuntime, train_run_name
from trainables.session import RaySession

_STAGING_PREFIX = ".staging-"


class ActorSession(RaySession):
    """`TrainingSession` of a trial running inside its Tune actor (rank 0 of 1)."""

    rank = 0
    world_size = 1

    def __init__(self, storage_path: str, config_hash: str, keep_checkpoints: int) -> None:
        super().__init__(config_hash)
        self._filesystem, self._run_dir = run_directory(storage_path, train_run_name(config_hash))
        self._keep = keep_checkpoints

    def device(self) -> torch.device:
        """The GPU Tune assigned to this actor (Ray limits CUDA_VISIBLE_DEVICES to it), else CPU."""
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def checkpoint_candidates(self) -> list[ray.train.Checkpoint]:
        """The checkpoints in the trial's run directory, newest first."""
        return stored_checkpoints(self._filesystem, self._run_dir)

    def deliver(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Store the checkpoint (if any), keep the newest ones, then `ray.tune.report`."""
        if checkpoint_dir is not None:
            result = {**result, ResultKey.CHECKPOINT_PATH: self._store(checkpoint_dir)}
            self._prune()
        ray.tune.report(result)

    def _store(self, local_dir: str) -> str:
        """Copy `local_dir` to a new `checkpoint_<time>` of the run directory; its path.

        Staged under a hidden name and renamed, so a reader never sees half a checkpoint on a
        local disk (on object stores each file's sha256 catches a partial copy).
        """
        name = f"{RAY_CHECKPOINT_PREFIX}{datetime.now():%Y-%m-%d_%H-%M-%S.%f}"
        final = posixpath.join(self._run_dir, name)
        staging = posixpath.join(self._run_dir, _STAGING_PREFIX + name)
        self._filesystem.create_dir(staging, recursive=True)
        pyarrow.fs.copy_files(
            local_dir,
            staging,
            source_filesystem=pyarrow.fs.LocalFileSystem(),
            destination_filesystem=self._filesystem,
        )
        self._filesystem.move(staging, final)
        return final

    def _prune(self) -> None:
        """Delete all but the newest `keep_checkpoints` checkpoints."""
        for old in stored_checkpoints(self._filesystem, self._run_dir)[self._keep :]:
            self._filesystem.delete_dir(old.path)


def train_in_actor(config: dict[str, Any], runtime: TrialRuntime) -> None:
    """Tune function trainable of the actor executor: train one trial in this process."""
    cfg = TrainConfig.model_validate(train_payload(config))
    session = ActorSession(
        runtime.train_storage_path, TrialMeta.of(config).config_hash, cfg.keep_checkpoints
    )
    run_epochs(cfg, session)
