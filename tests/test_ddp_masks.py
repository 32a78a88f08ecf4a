"""Masks stay identical across DDP ranks (2 gloo processes, different data per rank)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sparseopt

WORLD = 2
STEPS = 12
# (method, broadcast_masks, attach to the inner module before the DDP wrap, drop scores)
RUNS = [
    (method, broadcast, attach_first, "magnitude")
    for broadcast, attach_first in ((False, False), (True, False), (True, True))
    for method in ("rigl", "set")
] + [(method, False, False, "row_normalized") for method in ("rigl", "set")]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    results = {}
    for method, broadcast, attach_first, drop_scores in RUNS:
        net = _net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        model = net if attach_first else DistributedDataParallel(net)
        state = sparseopt.attach(model, optimizer, method=method, sparsity=0.8, preconditioner="sparseopt",
                                 total_steps=2 * STEPS, delta_t=3, broadcast_masks=broadcast,
                                 drop_scores=drop_scores)  # fmt: skip
        if attach_first:
            model = DistributedDataParallel(net)
        initial = {name: mask.clone() for name, mask in state.masks.items()}
        generator = torch.Generator().manual_seed(100 + rank)
        losses = []
        for _ in range(STEPS):
            x = torch.randn(8, 3, 8, 8, generator=generator)
            y = torch.randint(0, 10, (8,), generator=generator)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        results[(method, broadcast, attach_first, drop_scores)] = {
            "initial": initial,
            "masks": {name: mask.clone() for name, mask in state.masks.items()},
            "weights": {name: p.detach().clone() for name, p in net.named_parameters()},
            "losses": losses,
            "updates": state.last_update.step,
        }
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_masks_identical_across_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for run in RUNS:
        first, second = ranks[0][run], ranks[1][run]
        assert first["losses"] != second["losses"]  # each rank saw different data
        assert first["updates"] == 12
        for name, mask in first["masks"].items():
            assert torch.equal(mask, second["masks"][name]), (run, name)
        assert any(not torch.equal(first["initial"][n], m) for n, m in first["masks"].items())
        for name, weight in first["weights"].items():
            assert torch.equal(weight, second["weights"][name]), (run, name)
