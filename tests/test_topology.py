"""Topology updates: schedule, drop/grow rules, exact counts, zeroed regrowth, raw vs corrected."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sparseopt
from sparseopt.topology import (
    drop_and_grow,
    drop_fraction_at,
    is_update_step,
    row_normalized_scores,
)


def test_cosine_drop_fraction_and_update_steps():
    assert drop_fraction_at(0, 0.3, 0.75, 100) == pytest.approx(0.3)
    assert drop_fraction_at(37, 0.3, 0.5, 100) == pytest.approx(
        0.3 * (1 + math.cos(math.pi * 37 / 50)) / 2
    )
    assert drop_fraction_at(25, 0.3, 0.5, 100) == pytest.approx(0.15)
    assert drop_fraction_at(50, 0.3, 0.5, 100) == 0.0
    assert [t for t in range(0, 101) if is_update_step(t, 10, 0.75, 100)] == [
        10,
        20,
        30,
        40,
        50,
        60,
        70,
    ]
    assert not any(is_update_step(t, 1, 0.0, 100) for t in range(101))


def test_drop_smallest_magnitude_and_grow_best_score_among_previously_inactive():
    mask = torch.tensor([[True, True, True], [False, False, False]])
    weight = torch.tensor([[0.5, -0.1, 0.3], [0.0, 0.0, 0.0]])
    scores = torch.tensor([[9.0, 9.0, 9.0], [0.1, -0.5, 0.2]])
    new = drop_and_grow(mask, weight, 1, scores=scores)
    assert new.tolist() == [[True, False, True], [False, True, False]]
    new = drop_and_grow(mask, weight, 2, scores=scores)
    assert new.tolist() == [[True, False, False], [False, True, True]]
    assert torch.equal(drop_and_grow(mask, weight, 10, scores=scores), ~mask)  # count capped at 3


def test_random_growth_is_reproducible_and_only_among_previously_inactive():
    generator = torch.Generator().manual_seed(0)
    mask = sparseopt.random_mask((20, 30), 150, generator)
    weight = torch.randn(20, 30, generator=generator) * mask
    grown_sets = []
    for seed in (1, 1, 2):
        new = drop_and_grow(mask, weight, 40, generator=sparseopt.layer_generator(seed, 7, 0))
        assert int(new.sum()) == 150
        assert int((mask & ~new).sum()) == 40 and int((new & ~mask).sum()) == 40
        grown_sets.append(new & ~mask)
    assert torch.equal(grown_sets[0], grown_sets[1]) and not torch.equal(
        grown_sets[0], grown_sets[2]
    )
    with pytest.raises(ValueError, match="exactly one"):
        drop_and_grow(mask, weight, 1)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


@pytest.mark.parametrize("drop_scores", ["magnitude", "row_normalized"])
@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_dynamic_updates_keep_counts_zero_regrowth_and_follow_the_schedule(
    method, optimizer_name, drop_scores
):
    total_steps, delta_t, t_end, drop_fraction = 40, 4, 0.75, 0.3
    model = tiny_net()
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = sparseopt.attach(model, optimizer, method=method, sparsity=0.8, preconditioner="sparseopt",
                             total_steps=total_steps, delta_t=delta_t, t_end=t_end,
                             drop_fraction=drop_fraction, drop_scores=drop_scores)  # fmt: skip
    counts = {name: int(mask.sum()) for name, mask in state.masks.items()}
    modules = dict(model.named_modules())
    union = {name: mask.clone() for name, mask in state.masks.items()}
    before: dict[str, torch.Tensor] = {}
    updates = []

    def snapshot(opt, args, kwargs):
        before.update({name: mask.clone() for name, mask in state.masks.items()})

    def check(opt, args, kwargs):
        step = state.step
        changed = any(not torch.equal(before[n], state.masks[n]) for n in before)
        if is_update_step(step, delta_t, t_end, total_steps):
            updates.append(step)
            assert state.last_update.step == step
            fraction = drop_fraction_at(step, drop_fraction, t_end, total_steps)
            assert changed == any(round(fraction * count) > 0 for count in counts.values())
            assert state.last_update.drop_fraction == fraction
            for name, old in before.items():
                new, weight = state.masks[name], modules[name].weight
                expected = round(fraction * counts[name])
                assert int((old & ~new).sum()) == expected == state.last_update.dropped[name]
                assert int((new & ~old).sum()) == expected == state.last_update.grown[name]
                grown = new & ~old
                assert torch.count_nonzero(weight[grown]) == 0
                for value in opt.state[weight].values():
                    if value.shape == weight.shape:
                        assert torch.count_nonzero(value[grown]) == 0
        else:
            assert not changed
        for name, mask in state.masks.items():
            assert int(mask.sum()) == counts[name]
            weight = modules[name].weight
            assert torch.count_nonzero(weight[~mask]) == 0
            assert torch.count_nonzero(weight.grad[~mask]) == 0
            for value in opt.state[weight].values():
                if value.shape == weight.shape:
                    assert torch.count_nonzero(value[~mask]) == 0
            union[name] |= mask
        assert state.itop_rate() == sum(int(u.sum()) for u in union.values()) / state.num_maskable

    optimizer.register_step_pre_hook(snapshot)
    optimizer.register_step_post_hook(check)
    generator = torch.Generator().manual_seed(1)
    for _ in range(total_steps):
        x = torch.randn(8, 3, 8, 8, generator=generator)
        y = torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert updates == [4, 8, 12, 16, 20, 24, 28]
    assert state.last_update.step == 28 and state.step == total_steps
    assert state.itop_rate() > 1 - state.sparsity()


def crafted_layer(
    regrow_scores: str,
) -> tuple[nn.Module, torch.optim.Optimizer, sparseopt.SparseState]:
    """A 2x8 layer with k = (1, 7): f = (0.5, 1.32). Row 0's free weights have |g| = 1, row 1's has 0.9."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 2, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    state = sparseopt.attach(model, optimizer, method="rigl", sparsity=0.5, preconditioner="sparseopt",
                             regrow_scores=regrow_scores, total_steps=1000, delta_t=1, drop_fraction=0.125)  # fmt: skip
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 0] = True
    mask[1, 1:] = True
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(16.0, 0.0, -1.0).view(2, 8))
    saved = state.state_dict()
    saved["masks"]["0"] = mask
    state.load_state_dict(saved)
    grad = torch.ones(2, 8)
    grad[1, 0] = 0.9
    model[0].weight.grad = grad
    return model, optimizer, state


def test_raw_and_corrected_scores_regrow_different_weights():
    grown = {}
    for scores in ("raw", "corrected"):
        _, optimizer, state = crafted_layer(scores)
        old = state.masks["0"].clone()
        optimizer.step()
        assert state.last_update.grown == {"0": 1} and state.last_update.dropped == {"0": 1}
        assert not state.masks["0"][1, 7]  # the smallest active |w| (= 1) was dropped
        grown[scores] = (state.masks["0"] & ~old).nonzero().tolist()
    assert grown["raw"][0][0] == 0  # |g| = 1 beats 0.9
    assert grown["corrected"] == [[1, 0]]  # 1.32 * 0.9 beats 0.5 * 1


def test_set_growth_is_seeded():
    masks = []
    for _ in range(2):
        model = tiny_net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        state = sparseopt.attach(
            model, optimizer, method="set", sparsity=0.8, total_steps=20, delta_t=2, seed=4
        )
        generator = torch.Generator().manual_seed(1)
        for _ in range(6):
            optimizer.zero_grad()
            model(torch.randn(4, 3, 8, 8, generator=generator)).sum().backward()
            optimizer.step()
        masks.append(state.masks)
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


# ---------------------------------------------------------------- row-normalized drop scores
def test_row_normalized_scores_divide_by_the_row_norm():
    weight = torch.tensor([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    expected = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # 3/5, 4/5 in fp32
    assert torch.equal(row_normalized_scores(weight), expected)


def test_row_normalized_drop_spares_a_small_row_that_magnitude_would_empty():
    """Row 0 holds three large weights (|w| = 10, 9, 8; norm 15.65), row 1 one small weight (1):
    magnitude drops row 1's only weight, row_normalized the 8 (8/15.65 < 1/1)."""
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    weight = torch.tensor([[10.0, -9.0, 8.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    scores = torch.tensor([[0.0, 0.0, 0.0, 5.0], [0.0, 1.0, 2.0, 3.0]])
    by_magnitude = drop_and_grow(mask, weight, 1, scores=scores)
    by_row = drop_and_grow(mask, weight, 1, scores=scores, drop_scores="row_normalized")
    assert by_magnitude.tolist() == [[True, True, True, True], [False, False, False, False]]
    assert by_row.tolist() == [[True, True, False, True], [True, False, False, False]]
    two = drop_and_grow(mask, weight, 2, generator=torch.Generator().manual_seed(0), drop_scores="row_normalized")  # fmt: skip
    assert (mask & ~two).tolist() == [[False, True, True, False], [False, False, False, False]]
    assert int(two.sum()) == 4


def rownorm_layer(trace: bool) -> tuple[nn.Module, torch.optim.Optimizer, sparseopt.SparseState]:
    """A 2x4 layer: row 0 active at |w| = 10, 9, 8 (norm 15.65), row 1 at |w| = 1; one update
    of one weight at step 1; growth scores favour row 1, column 3."""
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    state = sparseopt.attach(model, optimizer, method="rigl", sparsity=0.5, total_steps=1000,
                             delta_t=1, drop_fraction=0.25, drop_scores="row_normalized",
                             trace_rows=trace)  # fmt: skip
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[10.0, -9.0, 8.0, 7.0], [1.0, 6.0, 5.0, 4.0]]))
    saved = state.state_dict()
    saved["masks"]["0"] = torch.tensor([[True, True, True, False], [True, False, False, False]])
    state.load_state_dict(saved)  # zeroes the weights off the mask
    grad = torch.tensor([[0.0, 0.0, 0.0, 0.5], [0.0, 0.25, 0.125, 2.0]])
    model[0].weight.grad = grad
    return model, optimizer, state


def test_rownorm_arm_drops_by_row_normalized_score_and_keeps_counts_and_zeros():
    model, optimizer, state = rownorm_layer(trace=False)
    optimizer.step()
    assert state.last_update.dropped == {"0": 1} and state.last_update.grown == {"0": 1}
    new = state.masks["0"]
    assert new.tolist() == [[True, True, False, False], [True, False, False, True]]
    weight = model[0].weight.detach()
    assert weight.tolist() == [[10.0, -9.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    momentum = optimizer.state[model[0].weight]["momentum_buffer"]
    assert torch.count_nonzero(momentum[~new]) == 0 and momentum[1, 3] == 0
    assert state.row_trace == [] and state.state_dict()["row_trace"]["layers"] == {}


def test_the_row_trace_records_norms_and_counts_before_the_drop_and_after_the_grow():
    _, optimizer, state = rownorm_layer(trace=True)
    optimizer.step()
    optimizer.step()
    (step, rows), (second, _) = state.row_trace
    assert (step, second) == (1, 2)
    first = rows["0"]
    assert first.norm_before.tolist() == pytest.approx([math.sqrt(245.0), 1.0])
    assert first.active_before.tolist() == [3, 1]
    assert first.norm_after.tolist() == pytest.approx([math.sqrt(181.0), 1.0])
    assert first.active_after.tolist() == [2, 2]
    saved = state.state_dict()["row_trace"]
    assert saved["steps"].tolist() == [1, 2]
    assert saved["layers"]["0"]["active_before"].tolist() == [[3, 1], [2, 2]]
    entries = sparseopt.row_norm_trace(state.state_dict())["0"]
    assert [entry["step"] for entry in entries] == [1, 2]
    assert entries[0]["active_after"] == [2, 2]
    assert entries[0]["norm_before"] == pytest.approx([math.sqrt(245.0), 1.0])
