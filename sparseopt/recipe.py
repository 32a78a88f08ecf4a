"""Build everything one training run needs from a `TrainConfig`, and train, save and restore it
(the pieces `sparseopt.loop.run_epochs` is made of)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sparseopt.checkpoint import restore_training_state, training_payload
from sparseopt.config import OptimConfig, TrainConfig
from sparseopt.data import (
    DatasetSplits,
    Loaders,
    build_datasets,
    build_loaders,
    check_decode_device,
    set_epoch,
)
from sparseopt.engine import epoch_metrics, evaluate, seed_everything, train_one_epoch
from sparseopt.models import build_model
from sparseopt.schedules import build_scheduler, peak_lr
from sparseopt.state import SparseState, attach


@dataclass
class Run:
    """The built pieces of one run. `model` is DDP-wrapped when distributed; `module` never is.

    Train with `model`; evaluate and checkpoint `module` (a DDP forward syncs buffers across
    ranks, and eval shards may differ in batch count between ranks).
    """

    cfg: TrainConfig
    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sparse_state: SparseState
    datasets: DatasetSplits
    loaders: Loaders
    steps_per_epoch: int
    total_steps: int
    device: torch.device
    rank: int
    world_size: int


def resolve_device(cfg: TrainConfig) -> torch.device:
    """`cfg.device`, with "auto" meaning CUDA when available, else CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' but no CUDA device is available; use device='auto' or 'cpu'"
        )
    return torch.device(cfg.device)


def build_optimizer(params: Any, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """The base optimizer named by `cfg.name` at learning rate `lr` (weight decay on all params)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name must be one of 'sgd', 'adam', 'adamw', got {cfg.name!r}")


def build_run(
    cfg: TrainConfig, rank: int = 0, world_size: int = 1, device: torch.device | str | None = None
) -> Run:
    """Seed, then build data, model, optimizer (before `attach`), sparse state and lr schedule.

    The global batch `data.batch_size` is split over `world_size` ranks; the peak lr is scaled
    by it when `schedule.reference_batch_size` is set. When torch.distributed is initialized
    and `world_size > 1`, the model is wrapped in DDP after `attach` (masks are identical on all
    ranks because they are drawn from seeded generators). `data.decode="gpu"` without CUDA is
    refused before anything is built.
    """
    device = torch.device(device) if device is not None else resolve_device(cfg)
    check_decode_device(cfg.data, device)
    if cfg.precision == "bf16" and device.type != "cuda":
        warnings.warn(
            f"precision='bf16' uses autocast on CUDA only; training in fp32 on {device}",
            RuntimeWarning,
            stacklevel=2,
        )
    seed_everything(cfg.seed, cfg.deterministic)
    datasets = build_datasets(cfg.data, cfg.seed)
    loaders = build_loaders(datasets, cfg.data, rank, world_size, cfg.seed, device=device)
    meta = datasets.meta
    module = build_model(cfg.model, meta["num_classes"], meta["in_channels"], meta["image_size"])
    module = module.to(device)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        module.parameters(), cfg.optim, peak_lr(cfg.optim.lr, cfg.schedule, cfg.data.batch_size)
    )
    steps_per_epoch = len(loaders.train)
    total_steps = cfg.epochs * steps_per_epoch
    sparse_state = attach(module, optimizer, cfg.sparse, total_steps=total_steps, seed=cfg.seed)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, total_steps)
    model = module
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        device_ids = None
        if device.type == "cuda":
            device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
        model = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    return Run(
        cfg=cfg,
        model=model,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        sparse_state=sparse_state,
        datasets=datasets,
        loaders=loaders,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        device=device,
        rank=rank,
        world_size=world_size,
    )


def train_and_evaluate(
    run: Run, epoch: int, on_step: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Train epoch `epoch` (0-based), evaluate val and test on the unwrapped module, return metrics
    (with the epoch's activity fraction of each modifier the run uses).

    The one epoch of `sparseopt.loop.run_epochs`, so every executor reports the same keys.
    """
    cfg = run.cfg
    set_epoch(run.loaders, epoch)
    run.sparse_state.reset_activity()
    train = train_one_epoch(
        run.model,
        run.loaders.train,
        run.optimizer,
        run.scheduler,
        run.device,
        precision=cfg.precision,
        channels_last=cfg.channels_last,
        label_smoothing=cfg.optim.label_smoothing,
        on_step=on_step,
        input_transform=run.datasets.to_input,
    )
    eval_args = {
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "input_transform": run.datasets.to_input,
    }
    val = evaluate(run.module, run.loaders.val, run.device, **eval_args)
    test = evaluate(run.module, run.loaders.test, run.device, **eval_args)
    return epoch_metrics(
        epoch + 1,
        train,
        val,
        test,
        lr=run.optimizer.param_groups[0]["lr"],
        sparsity=run.sparse_state.sparsity(),
        itop_rate=run.sparse_state.itop_rate(),
        activity=run.sparse_state.activity(),
    )


def run_payload(
    run: Run, epoch: int, history: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint payload of `run` after `epoch` completed epochs (unwrapped module)."""
    return training_payload(
        model=run.module,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        sparse_state=run.sparse_state,
        epoch=epoch,
        history=history,
        extra=extra,
    )


def restore_run(run: Run, payload: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Load a `run_payload` into `run`; return its completed epochs and metric history."""
    restore_training_state(
        payload,
        model=run.module,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        sparse_state=run.sparse_state,
    )
    return int(payload["epoch"]), list(payload["history"])
