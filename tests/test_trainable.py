"""One trial as a 2-worker Ray Train run (gloo DDP on CPU): masks stay identical on both ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import trial_meta

from contract.trial import trial_config
from sparseopt.config import TrainConfig
from trainables.driver import build_trainer
from trainables.runtime import TrialRuntime

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_two_worker_trial_keeps_masks_identical_and_resumes(local_ray, tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": 64},
            "model": {"name": "mlp", "hidden": 32},
            "schedule": {"warmup_epochs": 0},
            "sparse": {"method": "set", "sparsity": 0.9, "delta_t": 3},
            "epochs": 2,
        }
    )
    meta = trial_meta(budget=cfg.epochs, config_hash=cfg.config_hash())
    config = trial_config(cfg.model_dump(mode="json"), meta)
    runtime = TrialRuntime(train_storage_path=str(tmp_path), workers=2, cpus_per_worker=0.5)
    result = build_trainer(config, runtime).fit()
    assert result.error is None
    assert result.metrics["epoch"] == 2
    assert result.metrics["masks_in_sync"] is True
    assert 0.89 < result.metrics["measured_sparsity"] < 0.91

    checkpoints = sorted(path.name for path in Path(result.path).glob("checkpoint_*"))
    again = build_trainer(config, runtime).fit()
    assert again.error is None
    assert again.metrics["epoch"] == 2
    # Ray Train V2's Result carries the newest *checkpointed* report's metrics; the resumed
    # attempt reports epoch 2 from its checkpoint without a new one. A restart would have trained
    # epochs 1-2 again: two new checkpoints, timed anew.
    assert sorted(path.name for path in Path(again.path).glob("checkpoint_*")) == checkpoints
    assert again.checkpoint.path == result.checkpoint.path
    assert again.metrics["epoch_time_s"] == result.metrics["epoch_time_s"], (
        "restarted instead of resuming"
    )
