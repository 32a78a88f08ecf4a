"""Training epoch, evaluation (single process and 2-rank gloo), divergence, seeding, metric keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sparseopt.data import ShardSampler
from sparseopt.engine import (
    DivergedError,
    EvalStats,
    TrainStats,
    epoch_metrics,
    evaluate,
    seed_everything,
    train_one_epoch,
)
from sparseopt.models import mlp

CONVENTION_KEYS = {
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


class FixedLogits(nn.Module):
    """Returns row `i` of a fixed logits table for input value `i` (for exact metric checks)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.long().view(-1)]


def logits_case() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    table = torch.randn(13, 7)
    labels = torch.randint(0, 7, (13,))
    return table, labels


def expected_stats(table: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    loss = nn.functional.cross_entropy(table, labels).item()
    top1 = (table.argmax(1) == labels).double().mean().item() * 100
    top5 = (table.topk(5, 1).indices == labels[:, None]).any(1).double().mean().item() * 100
    return loss, top1, top5


def test_evaluate_exact_loss_top1_top5():
    table, labels = logits_case()
    loader = DataLoader(TensorDataset(torch.arange(13).float(), labels), batch_size=4)
    stats = evaluate(FixedLogits(table), loader, torch.device("cpu"))
    loss, top1, top5 = expected_stats(table, labels)
    assert stats.samples == 13
    assert stats.loss == pytest.approx(loss, rel=1e-6)
    assert stats.acc1 == pytest.approx(top1) and stats.acc5 == pytest.approx(top5)
    assert evaluate(FixedLogits(table), [], torch.device("cpu")) is None


def toy_loader(n: int = 96, batch: int = 16, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=generator)
    y = (x.flatten(1).sum(1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, drop_last=True)


def test_train_one_epoch_counts_and_steps_the_scheduler():
    seed_everything(0)
    model = mlp(16, 2, hidden=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    calls = []
    stats = train_one_epoch(
        model, toy_loader(90), optimizer, scheduler, torch.device("cpu"), on_step=calls.append
    )
    assert stats.samples == 80 and calls == [1, 2, 3, 4, 5]
    assert scheduler.last_epoch == 5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 6)
    assert math.isfinite(stats.loss) and 0.0 <= stats.acc1 <= 100.0 and stats.time_s > 0


def test_training_learns_the_toy_task():
    seed_everything(0)
    model = mlp(16, 2, hidden=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        last = train_one_epoch(model, toy_loader(), optimizer, None, torch.device("cpu"))
    assert last.acc1 > 90.0


def test_non_finite_loss_raises_diverged():
    seed_everything(0)
    model = mlp(16, 2, hidden=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.full((32, 1, 4, 4), float("nan"))
    loader = DataLoader(TensorDataset(x, torch.zeros(32, dtype=torch.long)), batch_size=8)
    with pytest.raises(DivergedError, match="non-finite"):
        train_one_epoch(model, loader, optimizer, None, torch.device("cpu"), check_every=1)


def test_seed_everything_reproduces_training():
    results = []
    for _ in range(2):
        seed_everything(7)
        model = mlp(16, 2, hidden=8)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        train_one_epoch(model, toy_loader(), optimizer, None, torch.device("cpu"))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


def test_bf16_request_is_fp32_on_cpu():
    table, labels = logits_case()
    loader = DataLoader(TensorDataset(torch.arange(13).float(), labels), batch_size=13)
    plain = evaluate(FixedLogits(table), loader, torch.device("cpu"))
    bf16 = evaluate(FixedLogits(table), loader, torch.device("cpu"), precision="bf16")
    assert plain == bf16
    with pytest.raises(ValueError, match="precision"):
        evaluate(FixedLogits(table), loader, torch.device("cpu"), precision="fp8")


def test_epoch_metrics_uses_the_convention_keys():
    train = TrainStats(loss=1.0, acc1=50.0, samples=100, time_s=2.0)
    stats = EvalStats(loss=0.5, acc1=60.0, acc5=90.0, samples=10)
    metrics = epoch_metrics(3, train, stats, stats, lr=0.01, sparsity=0.9, itop_rate=0.2)
    assert set(metrics) == CONVENTION_KEYS
    assert metrics["epoch"] == 3 and metrics["samples_per_s"] == 50.0
    without_val = epoch_metrics(1, train, None, stats, lr=0.01, sparsity=0.9, itop_rate=0.2)
    assert set(without_val) == CONVENTION_KEYS - {"val_loss", "val_acc1", "val_acc5"}


def test_epoch_metrics_reports_activity_under_the_contract_names():
    import contract.names

    train = TrainStats(loss=1.0, acc1=50.0, samples=100, time_s=2.0)
    metrics = epoch_metrics(
        1, train, None, None, lr=0.1, sparsity=0.9, itop_rate=0.2,
        activity={"renorm": 0.25, "ham": 1.0},
    )  # fmt: skip
    assert (metrics["renorm_active_frac"], metrics["ham_active_frac"]) == (0.25, 1.0)
    assert set(metrics) <= set(contract.names.EPOCH_METRICS) | {"epoch"}
    assert not {"clip_active_frac", "cap_active_frac", "wdscale_active_frac"} & set(metrics)


def test_train_and_evaluate_reports_the_epoch_activity_of_the_modifiers_in_use():
    """Warmup starts at lr 0, where HAM's factor is exp(0) = 1: it skips epoch 1's first step."""
    from sparseopt.config import TrainConfig
    from sparseopt.recipe import build_run, train_and_evaluate

    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": 256},
            "model": {"name": "mlp", "hidden": 16},
            "sparse": {"method": "static", "sparsity": 0.8, "preconditioner": "sparseopt",
                       "f_max": 1.0, "grad_renorm": True, "ham": {}},
            "schedule": {"warmup_epochs": 1, "warmup_start_lr": 0.0},
            "epochs": 2,
            "device": "cpu",
        }
    )  # fmt: skip
    run = build_run(cfg)
    steps = run.steps_per_epoch
    first, second = train_and_evaluate(run, 0), train_and_evaluate(run, 1)
    assert first["ham_active_frac"] == (steps - 1) / steps
    assert second["ham_active_frac"] == 1.0  # counted afresh each epoch
    for metrics in (first, second):
        assert (metrics["renorm_active_frac"], metrics["cap_active_frac"]) == (1.0, 1.0)
        assert "clip_active_frac" not in metrics and "wdscale_active_frac" not in metrics


def _two_rank_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank: evaluate fixed logits on its shard, then one DDP epoch through build_run."""
    from sparseopt.config import TrainConfig
    from sparseopt.recipe import build_run

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        table, labels = logits_case()
        dataset = TensorDataset(torch.arange(13).float(), labels)
        loader = DataLoader(dataset, batch_size=3, sampler=ShardSampler(13, rank, world_size))
        fixed = evaluate(FixedLogits(table), loader, torch.device("cpu"))
        cfg = TrainConfig.model_validate(
            {
                "data": {"name": "digits", "batch_size": 128},
                "model": {"name": "mlp", "hidden": 16},
                "sparse": {"method": "rigl", "sparsity": 0.8, "delta_t": 3},
                "schedule": {"warmup_epochs": 0},
                "epochs": 1,
                "device": "cpu",
            }
        )
        run = build_run(cfg, rank=rank, world_size=world_size)
        train_one_epoch(run.model, run.loaders.train, run.optimizer, run.scheduler, run.device)
        test = evaluate(run.module, run.loaders.test, run.device)
        result = {
            "fixed": (fixed.loss, fixed.acc1, fixed.acc5, fixed.samples),
            "ddp": isinstance(run.model, nn.parallel.DistributedDataParallel),
            "rank_batch": run.loaders.train.batch_size,
            "state": run.module.state_dict(),
            "test": (test.acc1, test.samples),
        }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_all_reduce_eval_and_keep_ddp_replicas_identical(tmp_path):
    """gloo, 2 ranks: eval sums cover the whole set once; after a DDP epoch with RigL updates,
    weights, masks and BN statistics are identical on both ranks."""
    mp.spawn(_two_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    loss, top1, top5 = expected_stats(*logits_case())
    for result in (first, second):
        got_loss, got_top1, got_top5, samples = result["fixed"]
        assert samples == 13 and got_loss == pytest.approx(loss, rel=1e-6)
        assert got_top1 == pytest.approx(top1) and got_top5 == pytest.approx(top5)
        assert result["ddp"] and result["rank_batch"] == 64
    assert first["test"] == second["test"] and first["test"][1] == 360
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, second["state"][name]), name
