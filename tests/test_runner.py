"""One in-process run: outputs, metric keys, and bit-for-bit resume after interruption."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from sparseopt import recipe as recipe_module
from sparseopt.checkpoint import load_latest_checkpoint
from sparseopt.config import TrainConfig
from sparseopt.runner import run_training

TIMING_KEYS = {"epoch_time_s", "samples_per_s"}
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "test_loss",
    "test_acc1",
    "test_acc5",
    "epoch_lr",
    "measured_sparsity",
    "itop_rate",
    "epoch_time_s",
    "samples_per_s",
}


def tiny_config(**changes) -> TrainConfig:
    payload = {
        "data": {"name": "digits", "batch_size": 128, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 24},
        "sparse": {"method": "rigl", "sparsity": 0.8, "preconditioner": "sparseopt", "delta_t": 4},
        "schedule": {"warmup_epochs": 1},
        "epochs": 4,
        "seed": 1,
        "device": "cpu",
    }
    payload.update(changes)
    return TrainConfig.model_validate(payload)


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def final_state(out_dir) -> dict[str, torch.Tensor]:
    return load_latest_checkpoint(out_dir / "checkpoints")["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    result = run_training(tiny_config(), out, progress=False)
    return out, result


def test_outputs_config_metrics_and_checkpoints(uninterrupted):
    out, result = uninterrupted
    assert (
        TrainConfig.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
        == tiny_config()
    )
    metrics = read_metrics(out)
    assert [row["epoch"] for row in metrics] == [1, 2, 3, 4]
    assert all(set(row) == METRIC_KEYS for row in metrics)
    assert metrics == result.history and result.resumed_from_epoch == 0
    assert metrics[-1]["measured_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert metrics[-1]["itop_rate"] > 0.2  # RigL explored beyond the initial 20%
    assert metrics[-1]["test_acc1"] > 50.0
    assert [p.name for p in sorted((out / "checkpoints").glob("*.pt"))] == [
        "ckpt-000003.pt",
        "ckpt-000004.pt",
    ]


def assert_same_run(out_a, out_b) -> None:
    assert without_timing(read_metrics(out_a)) == without_timing(read_metrics(out_b))
    state_a, state_b = final_state(out_a), final_state(out_b)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def count_epochs(monkeypatch) -> list[int]:
    """Patch the shared epoch trainer to record each call; returns the call log."""
    real_train = recipe_module.train_one_epoch
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(recipe_module, "train_one_epoch", counting)
    return calls


def test_resume_after_stop_is_bit_for_bit(uninterrupted, tmp_path, monkeypatch):
    straight, _ = uninterrupted
    first = run_training(tiny_config(), tmp_path, progress=False, until_epoch=2)
    assert len(first.history) == 2
    calls = count_epochs(monkeypatch)
    second = run_training(tiny_config(), tmp_path, progress=False)
    assert second.resumed_from_epoch == 2 and len(calls) == 2
    assert_same_run(straight, tmp_path)


def test_resume_after_crash_and_corrupted_checkpoint(uninterrupted, tmp_path, monkeypatch):
    """A crash in epoch 3, then a truncated epoch-2 checkpoint: resume from epoch 1, same result."""
    straight, _ = uninterrupted
    real_train = recipe_module.train_one_epoch
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(recipe_module, "train_one_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(), tmp_path, progress=False)
    monkeypatch.undo()
    newest = tmp_path / "checkpoints" / "ckpt-000002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    calls = count_epochs(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"ckpt-000002\.pt"):
        resumed = run_training(tiny_config(), tmp_path, progress=False)
    assert resumed.resumed_from_epoch == 1 and len(calls) == 3
    assert_same_run(straight, tmp_path)


def test_different_config_in_the_same_directory_is_refused(uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(ValueError, match="different config"):
        run_training(tiny_config(seed=2), out, progress=False)


def test_dense_run_with_progress_output(tmp_path, capsys):
    cfg = tiny_config(sparse={"method": "dense", "sparsity": 0.0}, epochs=2)
    result = run_training(cfg, tmp_path, progress=True)
    assert [row["measured_sparsity"] for row in result.history] == [0.0, 0.0]
    assert "epoch 2/2" in capsys.readouterr().out


def write_tiny_cifar100(root, count: int = 160) -> None:
    """cifar-100-python/{train,test,meta} pickles in the real release's format."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = [int(i) for i in generator.integers(0, 100, size=count)]
        entry = {
            "data": generator.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            "fine_labels": labels,
            "coarse_labels": [x // 5 for x in labels],
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [str(i) for i in range(100)]}, handle)


def test_resume_with_augmentation_and_random_regrowth(tmp_path):
    """Random crops/flips (global torch RNG) and SET regrowth: resume still bit-for-bit."""
    write_tiny_cifar100(tmp_path / "cifar")
    cfg = tiny_config(
        data={
            "name": "cifar100",
            "root": str(tmp_path / "cifar"),
            "batch_size": 32,
            "augment": True,
        },
        model={"name": "small_cnn"},
        sparse={"method": "set", "sparsity": 0.9, "delta_t": 2},
        epochs=3,
    )
    run_training(cfg, tmp_path / "straight", progress=False)
    run_training(cfg, tmp_path / "resumed", progress=False, until_epoch=1)
    assert run_training(cfg, tmp_path / "resumed", progress=False).resumed_from_epoch == 1
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
