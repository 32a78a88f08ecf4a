"""Atomic checkpoints, keep-last-K, fallback past corrupted files, RNG and training-state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import sparseopt
from sparseopt.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_latest_checkpoint,
    restore_rng_state,
    restore_training_state,
    save_checkpoint,
    training_payload,
)
from sparseopt.models import mlp


def payload(epoch: int) -> dict:
    return {"epoch": epoch, "weights": torch.full((3,), float(epoch)), "extra": {"note": "x"}}


def test_round_trip_and_keep_last_k(tmp_path):
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, payload(epoch), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000003.pt", "ckpt-000004.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000003.pt",
        "ckpt-000003.sha256",
        "ckpt-000004.pt",
        "ckpt-000004.sha256",
    ]
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["weights"], torch.full((3,), 4.0))
    assert loaded["extra"] == {"note": "x"}


def test_empty_or_missing_directory_has_no_checkpoint(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None
    assert load_latest_checkpoint(tmp_path / "absent") is None


def test_truncated_newest_falls_back_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, payload(1), keep=3)
    newest = save_checkpoint(tmp_path, payload(2), keep=3)
    newest.write_bytes(newest.read_bytes()[:100])
    newest.with_suffix(".sha256").unlink()  # truncation alone, no digest to help
    with pytest.warns(RuntimeWarning, match=r"ckpt-000002\.pt"):
        loaded = load_latest_checkpoint(tmp_path)
    assert loaded["epoch"] == 1


def test_bit_flip_is_caught_by_the_digest(tmp_path):
    save_checkpoint(tmp_path, payload(1), keep=3)
    newest = save_checkpoint(tmp_path, payload(2), keep=3)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=r"ckpt-000002\.pt.*sha256 mismatch"):
        assert load_latest_checkpoint(tmp_path)["epoch"] == 1


def test_no_loadable_checkpoint_raises(tmp_path):
    only = save_checkpoint(tmp_path, payload(1))
    only.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match=r"ckpt-000001\.pt"):
        load_latest_checkpoint(tmp_path)


def test_payload_needs_an_integer_epoch(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(tmp_path, {"weights": torch.zeros(1)})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, payload(1), keep=0)


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    save_checkpoint(tmp_path, {"epoch": 1, "rng": capture_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_latest_checkpoint(tmp_path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def build(init_seed: int):
    torch.manual_seed(init_seed)
    model = mlp(16, 3, hidden=12)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = sparseopt.attach(
        model, optimizer, method="rigl", sparsity=0.8, total_steps=40, delta_t=5, seed=3
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.99**step)
    return model, optimizer, scheduler, state


def steps(model, optimizer, scheduler, count: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        x = torch.randn(8, 16, generator=generator)
        y = torch.randint(0, 3, (8,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()


def test_training_state_round_trip_with_sparse_state(tmp_path):
    model, optimizer, scheduler, state = build(init_seed=3)
    steps(model, optimizer, scheduler, 12)
    save_checkpoint(
        tmp_path,
        training_payload(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            sparse_state=state,
            epoch=2,
            history=[{"epoch": 1}, {"epoch": 2}],
            extra={"hash": "abc"},
        ),
    )
    other = build(init_seed=4)
    loaded = load_latest_checkpoint(tmp_path)
    restore_training_state(
        loaded, model=other[0], optimizer=other[1], scheduler=other[2], sparse_state=other[3]
    )
    assert loaded["history"] == [{"epoch": 1}, {"epoch": 2}] and loaded["extra"] == {"hash": "abc"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, other[0].state_dict()[name]), name
    for name, mask in state.masks.items():
        assert torch.equal(mask, other[3].masks[name])
    assert (
        other[2].last_epoch == 12
        and other[1].param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    )
