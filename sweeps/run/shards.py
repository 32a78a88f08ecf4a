"""Shards: a large sweep runs as consecutive Tune experiments of whole cells, under one name.

Tune's driver does work per trial that grows with the trials of its experiment (its event
loop, snapshots and end-of-run analysis go over all of them). A sweep expecting more than
`resources.shard_trials` trials is therefore split into shards, each a Tune experiment of its
own, run one after the other by `sweeps.run.launch`; the MLflow experiment, the checkpoints
(`train_runs/`), the Optuna journal, `status`, `resume`, `report` and the progress display stay
one per sweep.

- A shard holds whole *cell groups*: the cells one curve point compares (same workload,
  method and sparsity, every arm and budget: `sweeps.tracking.aggregates` compares an arm with
  its baseline and a budget with the others inside one tracker), packed in spec order until the
  next group would overflow the shard. A group bigger than the limit gets a shard of its own.
  Groups holding the two cells of a primary pair (`SweepSpec.primary_cell_pairs`, e.g. a
  declared contrast between two methods) are one group: the adaptive-seeds rule judges a pair
  inside the searcher that serves both its cells.
- The plan is stored beside the spec (`shards.json`) before Ray starts and never reshuffled:
  an extension's new cells join their group's shard, or the last shard while it has room, or
  new shards. A sweep that predates shards is one shard holding the cells it ran.
- Shard 0's Tune experiment is the sweep folder itself (the layout of every unsharded sweep);
  shard k ≥ 1 lives in `<sweep folder>/shard-<k>/`.
- A shard that ended with every trial ended, none failed and MLflow's records all sent is
  *settled* at its expected trial count: a re-run skips it without restoring Tune, until an
  extension gives it more trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sweeps.spec.storage import read_text, write_text_atomic

if TYPE_CHECKING:
    from sweeps.spec.cells import Cell
    from sweeps.spec.schema import SweepSpec

SHARDS_FILE = "shards.json"
SHARD_DIR_PREFIX = "shard-"
VERSION = 1


@dataclass
class Shard:
    """One Tune experiment of the sweep: its cells, and the trial count it settled at."""

    index: int
    cells: list[str]
    settled: int | None = None

    def expected(self, spec: SweepSpec) -> int:
        """Tune trials the spec runs in this shard's cells."""
        return spec.trials_per_cell() * len(self.cells)

    def is_settled(self, spec: SweepSpec) -> bool:
        """Whether a run of `spec` has nothing to do in this shard (adaptive seeds: never
        known without the searcher, which a larger `max` or smaller half-width continues)."""
        if spec.grid.adaptive is not None:
            return False
        return self.settled is not None and self.settled >= self.expected(spec)


@dataclass
class ShardPlan:
    """The sweep's shards in the order they run."""

    shards: list[Shard] = field(default_factory=list)

    def shard_of(self, cell_id: str) -> Shard | None:
        """The shard holding a cell."""
        return next((shard for shard in self.shards if cell_id in shard.cells), None)

    def to_json(self) -> str:
        payload = {
            "version": VERSION,
            "shards": [{"cells": s.cells, "settled": s.settled} for s in self.shards],
        }
        return json.dumps(payload, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardPlan:
        """Read `to_json` back; ValueError naming `where` if it is not a plan."""
        try:
            payload: Any = json.loads(text)
            if payload["version"] != VERSION:
                raise ValueError(f"version {payload['version']!r} is not {VERSION}")
            return cls(
                [
                    Shard(index, [str(c) for c in item["cells"]], item.get("settled"))
                    for index, item in enumerate(payload["shards"])
                ]
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: not a shard plan ({error})") from None


def sweep_dir_of(spec_file: str) -> str:
    """The sweep's folder: where its stored spec lives."""
    return spec_file.rsplit("/", 1)[0]


def shard_dir(sweep_dir: str, index: int) -> str:
    """Where shard `index` keeps its Tune experiment (shard 0: the sweep folder itself)."""
    sweep_dir = sweep_dir.rstrip("/")
    return sweep_dir if index == 0 else f"{sweep_dir}/{SHARD_DIR_PREFIX}{index:03d}"


def shard_run_location(storage_path: str, name: str, index: int) -> tuple[str, str]:
    """(storage path, experiment name) of shard `index` for Tune's `RunConfig`."""
    if index == 0:
        return storage_path, name
    return f"{storage_path.rstrip('/')}/{name}", f"{SHARD_DIR_PREFIX}{index:03d}"


def plan_path(sweep_dir: str) -> str:
    return f"{sweep_dir.rstrip('/')}/{SHARDS_FILE}"


def read_plan(sweep_dir: str) -> ShardPlan | None:
    """The stored plan of a sweep; None when it has none (a new sweep, or one from before)."""
    path = plan_path(sweep_dir)
    text = read_text(path)
    return None if text is None else ShardPlan.from_json(text, path)


def write_plan(sweep_dir: str, plan: ShardPlan) -> None:
    """Store the plan (atomically on local disk)."""
    write_text_atomic(plan_path(sweep_dir), plan.to_json())


def cell_group(cell: Cell) -> tuple[str, str, float]:
    """The cells one curve point compares stay in one shard: (workload, method, sparsity)."""
    return (cell.workload, cell.method, cell.sparsity)


def placement_groups(spec: SweepSpec) -> dict[str, tuple[str, str, float]]:
    """Cell id -> the group it is placed with: its `cell_group`, joined with the group of
    the other cell of every primary pair it is in (its representative group names it)."""
    parent: dict[tuple[str, str, float], tuple[str, str, float]] = {}

    def root(group: tuple[str, str, float]) -> tuple[str, str, float]:
        while parent.setdefault(group, group) != group:
            group = parent[group]
        return group

    for arm, baseline in spec.primary_cell_pairs():
        parent[root(cell_group(arm))] = root(cell_group(baseline))
    return {cell.cell_id: root(cell_group(cell)) for cell in spec.cells()}


def plan_shards(spec: SweepSpec, stored: ShardPlan | None) -> ShardPlan:
    """The stored plan, with the spec's cells it lacks placed (see the module docstring)."""
    previous = stored.shards if stored is not None else []
    plan = ShardPlan([Shard(s.index, list(s.cells), s.settled) for s in previous])
    per_cell = spec.trials_per_cell_range()[1]
    limit = spec.resources.shard_trials
    placed = {cell for shard in plan.shards for cell in shard.cells}
    home: dict[tuple[str, str, float], Shard] = {}
    joined = placement_groups(spec)
    for shard in plan.shards:
        for cell_id in shard.cells:
            if cell_id in joined:
                home.setdefault(joined[cell_id], shard)
    groups: dict[tuple[str, str, float], list[str]] = {}
    for cell in spec.cells():
        if cell.cell_id not in placed:
            groups.setdefault(joined[cell.cell_id], []).append(cell.cell_id)
    for group, members in groups.items():
        shard = home.get(group)
        if shard is None:
            last = plan.shards[-1] if plan.shards else None
            size = per_cell * len(members)
            if last is None or (last.cells and per_cell * len(last.cells) + size > limit):
                last = Shard(len(plan.shards), [])
                plan.shards.append(last)
            shard = last
        shard.cells.extend(members)
    return plan


def legacy_plan(cells: list[str]) -> ShardPlan:
    """The plan of a sweep that ran before shards: one shard holding the cells it ran."""
    return ShardPlan([Shard(0, list(cells))])


def shard_cells(spec_file: str, index: int) -> list[str] | None:
    """The cells shard `index` holds by the plan beside `spec_file`; None (every cell of the
    spec) when there is no plan (a searcher used outside `sweeps.run.launch`)."""
    plan = read_plan(sweep_dir_of(spec_file))
    if plan is None:
        return None
    if index >= len(plan.shards):
        raise ValueError(f"{plan_path(sweep_dir_of(spec_file))} has no shard {index}")
    return list(plan.shards[index].cells)
