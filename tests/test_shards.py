"""Shards: a large sweep as consecutive Tune experiments of whole cell groups, one plan."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sweeps.run.search import SweepSearcher
from sweeps.run.shards import (
    Shard,
    ShardPlan,
    legacy_plan,
    plan_shards,
    read_plan,
    shard_dir,
    shard_run_location,
    write_plan,
)
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec

BASE: dict[str, Any] = {
    "name": "big",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt", "set"],
        "sparsities": [0.8, 0.9],
        "budgets": [1, 2],
        "seeds": [0, 1],
    },
    "search": {"lr": {"grid": [0.01, 0.1]}},
}
"""3 arms (rigl and rigl+sparseopt share a method) × 2 sparsities × 2 budgets = 12 cells of
2 lrs × 2 seeds = 4 trials; a cell group (workload, method, sparsity) holds 4 cells (2 arms ×
2 budgets, 16 trials) for rigl and 2 cells (8 trials) for set."""


def spec_with(shard_trials: int, **grid: Any) -> SweepSpec:
    payload = copy.deepcopy(BASE)
    payload["grid"].update(grid)
    payload["resources"] = {"shard_trials": shard_trials}
    return parse_spec(payload)


def groups(plan: ShardPlan) -> list[list[tuple[str, str]]]:
    """Each shard's cells as (arm, sparsity) pairs, budgets folded."""
    found = []
    for shard in plan.shards:
        pairs: list[tuple[str, str]] = []
        for cell in shard.cells:
            _, arm, sparsity, _ = cell.split("/")
            if (arm, sparsity) not in pairs:
                pairs.append((arm, sparsity))
        found.append(pairs)
    return found


def test_a_sweep_within_the_limit_is_one_shard_in_the_sweep_folder() -> None:
    spec = spec_with(10_000)
    plan = plan_shards(spec, None)
    assert [sorted(shard.cells) for shard in plan.shards] == [
        sorted(c.cell_id for c in spec.cells())
    ]
    assert shard_dir("/s/big", 0) == "/s/big"
    assert shard_run_location("/s", "big", 0) == ("/s", "big")
    assert shard_dir("/s/big/", 2) == "/s/big/shard-002"
    assert shard_run_location("/s", "big", 2) == ("/s/big", "shard-002")


def test_cell_groups_stay_whole_and_fill_shards_in_spec_order() -> None:
    spec = spec_with(24)
    plan = plan_shards(spec, None)
    assert groups(plan) == [
        [("rigl", "s=0.8"), ("rigl+sparseopt", "s=0.8")],  # 16 trials: the next 16 overflow 24
        [("rigl", "s=0.9"), ("rigl+sparseopt", "s=0.9"), ("set", "s=0.8")],  # 16 + 8
        [("set", "s=0.9")],
    ]
    assert [shard.expected(spec) for shard in plan.shards] == [16, 24, 8]
    assert sum(shard.expected(spec) for shard in plan.shards) == spec.expected_trials()
    assert sorted(c for s in plan.shards for c in s.cells) == sorted(
        c.cell_id for c in spec.cells()
    )


def test_a_group_bigger_than_the_limit_gets_a_shard_of_its_own() -> None:
    plan = plan_shards(spec_with(5), None)
    assert [len(shard.cells) for shard in plan.shards] == [4, 4, 2, 2]


def test_an_extension_keeps_the_plan_and_places_only_new_cells(tmp_path: Path) -> None:
    spec = spec_with(24)
    plan = plan_shards(spec, None)
    plan.shards[0].settled = 16
    write_plan(str(tmp_path), plan)
    stored = read_plan(str(tmp_path))
    assert stored == plan
    grown = spec_with(24, budgets=[1, 2, 4], sparsities=[0.8, 0.9, 0.95])
    extended = plan_shards(grown, stored)
    for before, after in zip(plan.shards, extended.shards, strict=False):
        assert after.cells[: len(before.cells)] == before.cells  # nothing moves
    # a new budget joins its group's shard, which is no longer settled at its new size
    assert "default/rigl/s=0.8/e=4" in extended.shards[0].cells
    assert extended.shards[0].settled == 16 and not extended.shards[0].is_settled(grown)
    assert plan.shards[0].is_settled(spec)
    # new groups fill the last shard while it has room (set s=0.9 holds 12 of 24 now), then
    # new ones: rigl's s=0.95 group (24 trials), set's (12)
    assert groups(extended)[2:] == [
        [("set", "s=0.9")],
        [("rigl", "s=0.95"), ("rigl+sparseopt", "s=0.95")],
        [("set", "s=0.95")],
    ]


def test_a_sweep_from_before_shards_is_one_shard_of_the_cells_it_ran() -> None:
    old = spec_with(10_000)
    grown = spec_with(10, sparsities=[0.8, 0.9, 0.95])
    plan = plan_shards(grown, legacy_plan([cell.cell_id for cell in old.cells()]))
    assert plan.shards[0].cells == [cell.cell_id for cell in old.cells()]
    assert all("s=0.95" in cell for shard in plan.shards[1:] for cell in shard.cells)
    assert len(plan.shards) == 3  # rigl's and set's s=0.95 groups (16 and 8 trials)


def test_a_searcher_serves_its_shards_cells_only(tmp_path: Path) -> None:
    spec = spec_with(24)
    spec_file = tmp_path / "sweep_spec.yaml"
    spec_file.write_text(spec.to_yaml())
    plan = plan_shards(spec, None)
    write_plan(str(tmp_path), plan)
    handed: list[str] = []
    for index in range(len(plan.shards)):
        searcher = SweepSearcher(spec, spec_file=str(spec_file), shard=index)
        cells = []
        while isinstance(config := searcher.suggest(f"{index}-{len(cells)}"), dict):
            cells.append(config["meta"]["cell"])
            searcher.on_trial_complete(f"{index}-{len(cells) - 1}", {"epoch": 2, "val_acc1": 1})
            handed.append(config["meta"]["config_hash"])
        assert config == SweepSearcher.FINISHED
        assert set(cells) == set(plan.shards[index].cells)
    assert len(handed) == len(set(handed)) == spec.expected_trials()


def test_a_plan_that_is_not_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "shards.json").write_text('{"shards": 3}')
    with pytest.raises(ValueError, match=r"shards\.json: not a shard plan"):
        read_plan(str(tmp_path))


def test_settled_means_nothing_left_at_the_expected_count() -> None:
    spec = spec_with(10_000)
    shard = Shard(0, [cell.cell_id for cell in spec.cells()])
    assert not shard.is_settled(spec)
    shard.settled = spec.expected_trials()
    assert shard.is_settled(spec)
    assert not shard.is_settled(spec_with(10_000, seeds=[0, 1, 2]))


def test_an_adaptive_sweeps_primary_pairs_keep_both_cells_in_one_shard(tmp_path: Path) -> None:
    """`set:rigl` pairs cells of two methods (two cell groups); packed apart, set at s=0.8
    would share no shard with rigl at s=0.8 (4 rigl cells × 6 trials fill shard 0), and the
    searcher of neither shard could judge the pair."""
    payload = copy.deepcopy(BASE)
    payload["grid"]["seeds"] = {"initial": 2, "max": 3, "until_halfwidth": 1.0}
    payload["resources"] = {"shard_trials": 24}
    payload["analysis"] = {"primary": ["rigl+sparseopt:rigl", "set:rigl"]}
    spec = parse_spec(payload)
    pairs = spec.primary_cell_pairs()
    assert len(pairs) == 8  # 2 contrasts × 2 sparsities × 2 budgets
    plan = plan_shards(spec, None)
    for arm, baseline in pairs:
        assert plan.shard_of(arm.cell_id) is plan.shard_of(baseline.cell_id)
    assert groups(plan) == [
        [("rigl", "s=0.8"), ("rigl+sparseopt", "s=0.8"), ("set", "s=0.8")],
        [("rigl", "s=0.9"), ("rigl+sparseopt", "s=0.9"), ("set", "s=0.9")],
    ]
    # an extension's new cells join their joined group's shard
    payload["grid"]["budgets"] = [1, 2, 4]
    grown = plan_shards(parse_spec(payload), plan)
    assert [len(shard.cells) for shard in grown.shards] == [9, 9]
