"""The Tune trial: a small driver that runs one trial's Ray Train `TorchTrainer`.

Ray Train V2 inside Tune: the trial is a function trainable that builds the trainer and
calls `fit()`; rank 0's metrics reach Tune through `TuneReportCallback`. The inner run has
a deterministic name (the trial's config hash), so a restarted driver finds the trial's
latest checkpoint and the workers resume from it. A trial that fails for good (a worker
error past `max_failures`) first reports the metric history of its newest checkpoint: the
report of an epoch trained just before a worker died can die with it.
"""

from __future__ import annotations

from typing import Any

import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from contract.trial import ResultKey, TrialMeta, train_payload
from sparseopt.config import TrainConfig
from trainables.checkpoints import load_newest, run_directory, stored_checkpoints
from trainables.runtime import TrialRuntime, train_run_name
from trainables.worker import train_loop_per_worker


def build_trainer(config: dict[str, Any], runtime: TrialRuntime) -> TorchTrainer:
    """The trial's `TorchTrainer`: N DDP workers, checkpoints under the trial's fixed name."""
    callbacks = [TuneReportCallback()] if _in_tune() else []
    keep = TrainConfig.model_validate(train_payload(config)).keep_checkpoints
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=runtime.workers,
            use_gpu=runtime.gpus_per_worker > 0,
            resources_per_worker=runtime.resources_per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=train_run_name(TrialMeta.of(config).config_hash),
            storage_path=runtime.train_storage_path,
            callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=runtime.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
        ),
    )


def run_trial(config: dict[str, Any], runtime: TrialRuntime) -> None:
    """Tune function trainable: train one trial to its budget (or resume it)."""
    try:
        build_trainer(config, runtime).fit()
    except ray.train.TrainingFailedError:
        report_checkpointed_history(config, runtime)
        raise


def report_checkpointed_history(config: dict[str, Any], runtime: TrialRuntime) -> None:
    """Report the history of the trial's newest loadable checkpoint to Tune (if it has one)."""
    filesystem, run_dir = run_directory(
        runtime.train_storage_path, train_run_name(TrialMeta.of(config).config_hash)
    )
    payload, _ = load_newest(stored_checkpoints(filesystem, run_dir))
    if payload is None or not payload["history"]:
        return
    history = list(payload["history"])
    ray.tune.report({**history[-1], ResultKey.HISTORY: history, ResultKey.DIVERGED: False})


def _in_tune() -> bool:
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return _in_tune_session()
