"""One training epoch, one evaluation pass, and global seeding (plain PyTorch, DDP-aware)."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from contract.names import ACTIVITY_METRICS


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainStats:
    """Mean loss and top-1 (%) over the epoch's training batches (all ranks), samples, wall time."""

    loss: float
    acc1: float
    samples: int
    time_s: float


@dataclass(frozen=True)
class EvalStats:
    """Mean loss and top-1/top-5 accuracy (%) over a whole evaluation set (all ranks)."""

    loss: float
    acc1: float
    acc5: float
    samples: int


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `precision == "bf16"`; a no-op otherwise (fp32)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


InputTransform = Callable[[Any, torch.device, bool], torch.Tensor]
"""(images of a batch, device, channels_last) -> model input: e.g. uint8 -> normalised float."""


def as_model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """The default `InputTransform`: the batch's (float) images are the input, channels_last if asked."""
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _moved(value: Any, device: torch.device) -> Any:
    """A tensor copied to `device` (non-blocking); anything else (a JPEG batch) as it is."""
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def device_batches(loader: Iterable, device: torch.device) -> Iterator[tuple[Any, torch.Tensor]]:
    """`loader`'s (images, targets) on `device`. On CUDA one batch ahead: the next batch's copy
    is issued on a side stream while the current one trains; elsewhere a plain pass-through."""
    if device.type != "cuda":
        for images, targets in loader:
            yield _moved(images, device), _moved(targets, device)
        return
    side = torch.cuda.Stream(device)
    main = torch.cuda.current_stream(device)
    pending: tuple[tuple[Any, torch.Tensor], torch.cuda.Event] | None = None
    for images, targets in loader:
        with torch.cuda.stream(side):
            batch = (_moved(images, device), _moved(targets, device))
            copied = torch.cuda.Event()
            copied.record(side)
        if pending is not None:
            yield _handed_to(main, *pending)
        pending = (batch, copied)
    if pending is not None:
        yield _handed_to(main, *pending)


def _handed_to(
    stream: torch.cuda.Stream, batch: tuple[Any, torch.Tensor], copied: torch.cuda.Event
) -> tuple[Any, torch.Tensor]:
    """Make `stream` wait for `batch`'s copy, and keep its memory alive until `stream` is done."""
    stream.wait_event(copied)
    for value in batch:
        if isinstance(value, torch.Tensor):
            value.record_stream(stream)
    return batch


def _all_reduce_sums(values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 tensor of totals over ranks when torch.distributed is initialized."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s non-boolean buffers (BN running statistics) to every rank.

    DDP does this at the start of each forward; doing it after an epoch makes evaluation and
    checkpoints see the same statistics on every rank. Boolean masks are kept in sync by the
    sparse state itself.
    """
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            if buffer.dtype != torch.bool:
                dist.broadcast(buffer, src)


def _check_finite(global_loss_sum: torch.Tensor, step: int) -> None:
    """Raise `DivergedError` for a non-finite loss sum taken over all ranks, so every rank
    stops at the same step (a lone rank leaving would hang the others in DDP's all-reduce)."""
    if not torch.isfinite(global_loss_sum).item():
        raise DivergedError(f"non-finite training loss at or before step {step} of the epoch")


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    label_smoothing: float = 0.0,
    check_every: int = 20,
    on_step: Callable[[int], None] | None = None,
    input_transform: InputTransform | None = None,
) -> TrainStats:
    """Train over `loader` once: forward, backward, `optimizer.step()`, per-step `scheduler.step()`.

    Batches reach the device through `device_batches`; `input_transform` (default
    `as_model_input`) makes the model input there, inside the autocast of the forward pass.
    Loss finiteness is checked every `check_every` steps and at the end (a host sync each time);
    a non-finite loss raises `DivergedError`. `on_step(i)` is called after each step. A DDP
    model's buffers are broadcast from rank 0 at the end, so all ranks leave identical.
    """
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, samples
    start = time.perf_counter()
    step = 0
    to_input = input_transform or as_model_input
    for step, (images, targets) in enumerate(device_batches(loader, device), start=1):
        with autocast_context(device, precision):
            logits = model(to_input(images, device, channels_last))
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch = targets.numel()
        totals[0] += loss.detach().double() * batch
        totals[1] += (logits.detach().argmax(dim=1) == targets).sum()
        totals[2] += batch
        if step % check_every == 0:
            _check_finite(_all_reduce_sums(totals[0].clone()), step)
        if on_step is not None:
            on_step(step)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        broadcast_buffers(model.module)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    _check_finite(_all_reduce_sums(totals)[0], step)
    loss_sum, correct, samples = totals.tolist()
    if samples == 0:
        raise ValueError("the training loader yielded no batches")
    return TrainStats(loss_sum / samples, 100.0 * correct / samples, int(samples), elapsed)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    input_transform: InputTransform | None = None,
) -> EvalStats | None:
    """Cross-entropy loss and top-1/top-5 accuracy (%) in eval mode; None for an empty set.

    Inputs are made as in `train_one_epoch` (`device_batches`, then `input_transform`).

    Sums are all-reduced across ranks when torch.distributed is initialized, so every rank
    returns the metrics of the whole set (eval shards must not overlap). Pass the unwrapped
    module, not a DDP wrapper: ranks may run different numbers of eval batches.
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, samples
    to_input = input_transform or as_model_input
    for images, targets in device_batches(loader, device):
        with autocast_context(device, precision):
            logits = model(to_input(images, device, channels_last)).float()
        totals[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets.unsqueeze(1)
        totals[1] += hits[:, 0].sum()
        totals[2] += hits.any(dim=1).sum()
        totals[3] += targets.numel()
    loss_sum, top1, top5, samples = _all_reduce_sums(totals).tolist()
    if samples == 0:
        return None
    return EvalStats(
        loss_sum / samples, 100.0 * top1 / samples, 100.0 * top5 / samples, int(samples)
    )


def epoch_metrics(
    epoch: int,
    train: TrainStats,
    val: EvalStats | None,
    test: EvalStats | None,
    lr: float,
    sparsity: float,
    itop_rate: float,
    activity: Mapping[str, float] | None = None,
) -> dict[str, float | int]:
    """One epoch's metrics under the keys of docs/conventions.md (`epoch` is 1-based).

    Validation (test) keys are omitted when that split is empty. `activity` (modifier ->
    fraction of the epoch's steps it changed, from `SparseState.activity()`) is reported under
    `contract.names.ACTIVITY_METRICS`' names, only for the modifiers it holds.
    """
    metrics: dict[str, float | int] = {
        "epoch": int(epoch),
        "train_loss": train.loss,
        "train_acc1": train.acc1,
    }
    for prefix, stats in (("val", val), ("test", test)):
        if stats is not None:
            metrics[f"{prefix}_loss"] = stats.loss
            metrics[f"{prefix}_acc1"] = stats.acc1
            metrics[f"{prefix}_acc5"] = stats.acc5
    metrics.update(
        {
            "epoch_lr": float(lr),
            "measured_sparsity": float(sparsity),
            "itop_rate": float(itop_rate),
            "epoch_time_s": train.time_s,
            "samples_per_s": train.samples / train.time_s if train.time_s > 0 else 0.0,
        }
    )
    for modifier, fraction in (activity or {}).items():
        metrics[ACTIVITY_METRICS[modifier]] = float(fraction)
    return metrics
