"""Per-step learning-rate schedules: linear warmup then cosine decay (science.md §5)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from sparseopt.config import ScheduleConfig


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    peak_lr: float,
    start_lr: float,
    final_lr: float,
) -> float:
    """The lr used at optimizer step `step` (0-based).

    Linear from `start_lr` (step 0) to `peak_lr` (step `warmup_steps`), then a half cosine from
    `peak_lr` to `final_lr` reached at step `total_steps`; constant `final_lr` afterwards.
    """
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def peak_lr(base_lr: float, cfg: ScheduleConfig, global_batch_size: int) -> float:
    """`base_lr`, scaled by global_batch / reference_batch_size when the reference is set."""
    if cfg.reference_batch_size is None:
        return base_lr
    return base_lr * global_batch_size / cfg.reference_batch_size


def lr_at_step(
    step: int, cfg: ScheduleConfig, peak: float, steps_per_epoch: int, total_steps: int
) -> float:
    """The lr of `cfg` at `step` for a run of `total_steps` steps with the given peak lr."""
    if cfg.kind == "constant":
        return peak
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    return warmup_cosine(step, total_steps, warmup_steps, peak, cfg.warmup_start_lr, cfg.final_lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    steps_per_epoch: int,
    total_steps: int,
) -> LambdaLR:
    """A per-step `LambdaLR` following `cfg`; the optimizer's lr must already be the peak lr.

    Step it once after every optimizer step. Raises if the warmup does not end before training.
    """
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(
            f"steps_per_epoch and total_steps must be >= 1, got {steps_per_epoch}, {total_steps}"
        )
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.kind == "warmup_cosine" and warmup_steps >= total_steps:
        raise ValueError(
            f"schedule.warmup_epochs={cfg.warmup_epochs} ({warmup_steps} steps) must end before "
            f"training does ({total_steps} steps); lower schedule.warmup_epochs or raise epochs"
        )
    peaks = [group["lr"] for group in optimizer.param_groups]

    def factor_for(peak: float):
        def factor(step: int) -> float:
            return lr_at_step(step, cfg, peak, steps_per_epoch, total_steps) / peak

        return factor

    return LambdaLR(optimizer, [factor_for(peak) for peak in peaks])
