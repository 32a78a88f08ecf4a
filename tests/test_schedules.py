"""Warmup + cosine learning-rate schedules: exact values at the key steps."""

from __future__ import annotations

import math

import pytest
import torch

from sparseopt.config import ScheduleConfig
from sparseopt.schedules import build_scheduler, lr_at_step, peak_lr, warmup_cosine


def test_warmup_cosine_key_steps():
    args = {
        "total_steps": 1000,
        "warmup_steps": 100,
        "peak_lr": 0.1,
        "start_lr": 0.0,
        "final_lr": 1e-6,
    }
    assert warmup_cosine(0, **args) == 0.0
    assert warmup_cosine(50, **args) == pytest.approx(0.05, abs=1e-15)
    assert warmup_cosine(100, **args) == pytest.approx(0.1, abs=1e-15)
    assert warmup_cosine(550, **args) == pytest.approx((0.1 + 1e-6) / 2, abs=1e-15)
    quarter = 1e-6 + (0.1 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert warmup_cosine(325, **args) == pytest.approx(quarter, abs=1e-15)
    assert warmup_cosine(1000, **args) == pytest.approx(1e-6, abs=1e-15)
    assert warmup_cosine(1200, **args) == pytest.approx(1e-6, abs=1e-15)


def test_warmup_from_nonzero_start_and_no_warmup():
    assert warmup_cosine(0, 100, 10, 0.4, 1e-5, 1e-5) == 1e-5
    assert warmup_cosine(5, 100, 10, 0.4, 1e-5, 1e-5) == pytest.approx((0.4 + 1e-5) / 2)
    assert warmup_cosine(0, 100, 0, 0.1, 0.0, 0.0) == pytest.approx(0.1)


def sgd(lr: float) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def lrs_over(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    values.append(scheduler.optimizer.param_groups[0]["lr"])
    return values


def test_cifar_recipe_per_step():
    """CIFAR: 5 warmup epochs from 0 to the base lr, cosine to 1e-6 at the end of the budget."""
    cfg = ScheduleConfig()
    optimizer = sgd(0.1)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10, total_steps=1000)
    values = lrs_over(scheduler, 1000)
    assert values[0] == 0.0
    assert values[25] == pytest.approx(0.05, rel=1e-12)
    assert values[50] == pytest.approx(0.1, rel=1e-12)
    assert values[525] == pytest.approx((0.1 + 1e-6) / 2, rel=1e-12)
    assert values[1000] == pytest.approx(1e-6, rel=1e-9)
    expected = [lr_at_step(step, cfg, 0.1, 10, 1000) for step in range(1001)]
    assert values == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_imagenet_recipe_batch_scaling():
    """ImageNet: peak 0.1 * B / 256, warmup from 1e-5, cosine to 1e-5."""
    cfg = ScheduleConfig(warmup_start_lr=1e-5, final_lr=1e-5, reference_batch_size=256)
    peak = peak_lr(0.1, cfg, global_batch_size=1024)
    assert peak == pytest.approx(0.4)
    optimizer = sgd(peak)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=100, total_steps=9000)
    values = lrs_over(scheduler, 9000)
    assert values[0] == pytest.approx(1e-5, rel=1e-12)
    assert values[500] == pytest.approx(0.4, rel=1e-12)
    assert values[9000] == pytest.approx(1e-5, rel=1e-9)
    assert max(values) == pytest.approx(0.4, rel=1e-12)
    assert peak_lr(0.1, ScheduleConfig(), global_batch_size=1024) == 0.1


def test_constant_schedule():
    optimizer = sgd(0.05)
    scheduler = build_scheduler(optimizer, ScheduleConfig(kind="constant"), 10, 30)
    assert set(lrs_over(scheduler, 30)) == {0.05}


def test_warmup_longer_than_training_is_rejected():
    with pytest.raises(ValueError, match=r"schedule\.warmup_epochs=5"):
        build_scheduler(
            sgd(0.1), ScheduleConfig(warmup_epochs=5), steps_per_epoch=10, total_steps=50
        )


def test_scheduler_state_round_trip_continues_the_curve():
    cfg = ScheduleConfig(warmup_epochs=1)
    first = build_scheduler(sgd(0.1), cfg, 10, 100)
    reference = lrs_over(first, 100)
    optimizer = sgd(0.1)
    partial = build_scheduler(optimizer, cfg, 10, 100)
    lrs_over(partial, 40)
    saved_opt, saved_sched = optimizer.state_dict(), partial.state_dict()
    optimizer2 = sgd(0.1)
    resumed = build_scheduler(optimizer2, cfg, 10, 100)
    optimizer2.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    assert lrs_over(resumed, 60) == reference[40:]
