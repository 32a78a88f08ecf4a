"""Dry-run cost of a sweep: trials, trial-epochs and device-hours per cell, before anything runs.

Per-epoch costs come from a table keyed by (dataset, model). The GPU rows are *assumptions*
(order-of-magnitude figures, not measurements on our hardware); the CPU rows were measured on
a 2-core machine. Pass `epoch_seconds` to replace them with your own timings. The estimate
assumes:

- every trial runs its full budget (early stopping can only make the sweep cheaper);
- device-seconds per epoch do not depend on how many workers share a trial (linear scaling),
  and a trial on a fraction of a GPU runs proportionally slower;
- each trial pays a fixed cost of its executor (`TRIAL_OVERHEAD_S`: everything but training
  between one trial's end and the next one's, measured by benchmarks/trial_overhead.py on 2
  CPUs): ≈ 0.35 s inside Tune's reused actor, ≈ 10 s on Ray Train (a controller and worker
  processes per trial, each importing torch);
- wall-clock time = the sum of trial times divided by `resources.max_concurrent_trials`
  (enough devices for that many trials at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sweeps.spec.schema import SweepSpec

TRIAL_OVERHEAD_S: dict[str, float] = {"actor": 0.35, "train": 10.0}
"""Seconds per trial besides training, by executor (BENCHMARKS.md, per-trial overhead)."""


@dataclass(frozen=True)
class EpochCost:
    """Wall seconds of one training epoch (with its evaluation) on `devices` devices of a kind."""

    seconds: float
    devices: float
    device: Literal["gpu", "cpu"]
    source: str


EPOCH_COSTS: dict[tuple[str, str], EpochCost] = {
    ("cifar100", "resnet20"): EpochCost(
        6.6,
        1,
        "gpu",
        "measured (benchmarks/gpu_epoch.py, 2026-11-25): one H100, batch 128, fp32, deterministic "
        "kernels, 4 loader workers, RigL+SparseOpt s=0.9; 45k training + 15k evaluation images "
        "of CIFAR shape (synthetic, in memory)",
    ),
    ("cifar100", "resnet50"): EpochCost(
        40.0,
        1,
        "gpu",
        "assumption: one A100-class GPU, batch 128, bf16 (CIFAR-size inputs, ~1.2k images/s)",
    ),
    ("imagenet", "resnet50"): EpochCost(
        106.0,
        8,
        "gpu",
        "measured on one H100, extrapolated to 8 (benchmarks/gpu_epoch.py, 2026-11-25): "
        "1,548 training images/s per GPU at 128 per GPU (global 1024), bf16, channels_last, "
        "deterministic kernels, 10 loader workers, RigL+SparseOpt s=0.9, synthetic 224x224 "
        "images in memory -> 103 s for 1.28M images + ~3 s of evaluation; linear DDP scaling "
        "assumed and JPEG decoding not counted. Measured while batches crossed the loader "
        "workers, pinning and the host-to-device copy as float32 (77 MB per batch), which set "
        "that pace; the CIFAR-100/ImageNet loaders now send uint8 and normalise on the GPU, so "
        "for that part the figure is a conservative (pre-change) one (not re-measured on a GPU)",
    ),
    ("digits", "small_cnn"): EpochCost(
        0.45, 1, "cpu", "measured: 1 CPU thread, batch 64, 1,293 images, incl. eval + checkpoint"
    ),
    ("digits", "mlp"): EpochCost(
        0.06, 1, "cpu", "measured: 1 CPU thread, batch 64, 1,293 images, incl. eval + checkpoint"
    ),
    ("synthetic", "small_cnn"): EpochCost(
        0.86, 1, "cpu", "measured: 1 CPU thread, batch 64, 2,048 32x32 images (default size)"
    ),
    ("synthetic", "mlp"): EpochCost(
        0.40, 1, "cpu", "measured: 1 CPU thread, batch 64, 2,048 32x32 images (default size)"
    ),
    ("synthetic", "resnet20"): EpochCost(
        8.9, 1, "cpu", "measured: 1 CPU thread, batch 64, 2,048 32x32 images (default size)"
    ),
}


@dataclass(frozen=True)
class CellCost:
    """One cell's share: its trials, their epochs, and device-hours (None if no cost is known)."""

    cell_id: str
    dataset: str
    model: str
    trials: int
    epochs_per_trial: int
    trial_epochs: int
    device: str | None
    device_hours: float | None
    wall_hours: float | None


@dataclass(frozen=True)
class CostEstimate:
    """The whole sweep's estimate, with the assumptions it rests on."""

    cells: list[CellCost]
    total_trials: int
    total_trial_epochs: int
    device_hours: dict[str, float]
    wall_hours: float | None
    unknown: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A plain-text table for `sparsesweep sweep --dry-run`."""
        width = max(len("cell"), *(len(c.cell_id) for c in self.cells))
        lines = [f"{'cell':<{width}}  trials  epochs  trial-epochs  device-hours"]
        for c in self.cells:
            hours = "?" if c.device_hours is None else f"{_hours(c.device_hours)} {c.device}"
            lines.append(
                f"{c.cell_id:<{width}}  {c.trials:>6}  {c.epochs_per_trial:>6}  "
                f"{c.trial_epochs:>12}  {hours}"
            )
        totals = ", ".join(
            f"{_hours(hours)} {kind}-hours" for kind, hours in self.device_hours.items()
        )
        lines.append(
            f"total: {len(self.cells)} cells, {self.total_trials} trials, "
            f"{self.total_trial_epochs} trial-epochs, {totals or 'no known cost'}"
        )
        if self.wall_hours is not None:
            lines.append(f"wall clock: about {rough_duration(self.wall_hours * 3600)}")
        for dataset, model in self.unknown:
            lines.append(
                f"no epoch cost for ({dataset}, {model}): pass epoch_seconds={{('{dataset}', "
                f"'{model}'): seconds}}"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def rough_duration(seconds: float) -> str:
    """An estimated duration in the unit people read it in, to two significant digits:
    `20 s`, `3 min`, `2.5 h`, `1,200 h` (an estimate claims no more precision)."""
    if seconds < 60:
        value, unit = seconds, "s"
    elif seconds < 3600:
        value, unit = seconds / 60, "min"
    else:
        value, unit = seconds / 3600, "h"
    rounded = float(f"{value:.2g}")
    return f"{rounded:,.0f} {unit}" if rounded >= 100 else f"{rounded:g} {unit}"


def _hours(hours: float) -> str:
    """Hours for people: three significant digits, thousands separated, never 1e+03."""
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _normalise(epoch_seconds: dict[tuple[str, str] | str, float]) -> dict[tuple[str, str], float]:
    table: dict[tuple[str, str], float] = {}
    for key, seconds in epoch_seconds.items():
        pair = tuple(key.split("/")) if isinstance(key, str) else tuple(key)
        if len(pair) != 2 or not seconds > 0:
            raise ValueError(
                f"epoch_seconds[{key!r}]: keys are (dataset, model) or 'dataset/model', "
                f"values seconds > 0, got {seconds!r}"
            )
        table[(str(pair[0]), str(pair[1]))] = float(seconds)
    return table


def estimate_cost(
    spec: SweepSpec,
    epoch_seconds: dict[tuple[str, str] | str, float] | None = None,
    trial_overhead_s: float | None = None,
    at_max: bool = False,
) -> CostEstimate:
    """Estimate trials, trial-epochs, device-hours and wall-clock hours of a sweep (adaptive
    seeds: with no seed added, or with `at_max` every primary cell at `grid.seeds.max`).

    `epoch_seconds` maps (dataset, model) — or "dataset/model" — to measured wall seconds per
    epoch of one trial *with this spec's resources*; it overrides `EPOCH_COSTS`. GPU rows of
    the table scale linearly with the GPUs a trial gets; CPU rows (tiny models) do not scale.
    """
    measured = _normalise(epoch_seconds or {})
    res = spec.resources
    if trial_overhead_s is None:
        trial_overhead_s = TRIAL_OVERHEAD_S[res.trial_executor]
    fewest, most = spec.trials_per_cell_range()
    grown = (
        {cell.cell_id for pair in spec.primary_cell_pairs() for cell in pair} if at_max else set()
    )
    lr = spec.search.lr.representative()
    cells: list[CellCost] = []
    device_hours: dict[str, float] = {}
    unknown: list[tuple[str, str]] = []
    notes: list[str] = []
    for cell in spec.cells():
        trials = most if cell.cell_id in grown else fewest
        config = cell.train_config(seed=spec.grid.search_seeds()[0], lr=lr)
        key = (config.data.name, config.model.name)
        device, epoch_wall = _epoch_wall(key, measured, spec, notes)
        if device is None and key not in unknown:
            unknown.append(key)
        hours = trial_wall = None
        if device is not None and epoch_wall is not None:
            per_worker = res.gpus_per_worker if device == "gpu" else res.cpus_per_worker
            devices = res.workers_per_trial * per_worker or 1.0
            trial_wall = cell.budget * epoch_wall + trial_overhead_s
            hours = trials * trial_wall * devices / 3600.0
            device_hours[device] = device_hours.get(device, 0.0) + hours
        cells.append(
            CellCost(
                cell_id=cell.cell_id,
                dataset=key[0],
                model=key[1],
                trials=trials,
                epochs_per_trial=cell.budget,
                trial_epochs=trials * cell.budget,
                device=device,
                device_hours=hours,
                wall_hours=None if trial_wall is None else trials * trial_wall / 3600.0,
            )
        )
    used = {(c.dataset, c.model) for c in cells}
    notes += [
        f"({d}, {m}): {cost.source}"
        for (d, m), cost in EPOCH_COSTS.items()
        if (d, m) in used and (d, m) not in measured
    ]
    notes.append(
        f"{trial_overhead_s:g} s overhead per trial ({res.trial_executor} executor); "
        "full budgets (no early stopping)"
    )
    wall = None if unknown else sum(c.wall_hours or 0.0 for c in cells) / res.max_concurrent_trials
    return CostEstimate(
        cells=cells,
        total_trials=sum(c.trials for c in cells),
        total_trial_epochs=sum(c.trial_epochs for c in cells),
        device_hours=device_hours,
        wall_hours=wall,
        unknown=unknown,
        notes=notes,
    )


def _epoch_wall(
    key: tuple[str, str], measured: dict[tuple[str, str], float], spec: SweepSpec, notes: list[str]
) -> tuple[str | None, float | None]:
    """(device kind, wall seconds per epoch of one trial with the spec's resources)."""
    res = spec.resources
    if key in measured:
        return ("gpu" if res.gpus_per_worker > 0 else "cpu"), measured[key]
    known = EPOCH_COSTS.get(key)
    if known is None:
        return None, None
    if known.device == "cpu":
        return "cpu", known.seconds
    gpus = res.workers_per_trial * res.gpus_per_worker
    if gpus <= 0:
        note = (
            f"{key} is costed on GPUs but resources.gpus_per_worker = 0: "
            "GPU-hours shown are what the sweep would take on GPUs"
        )
        if note not in notes:
            notes.append(note)
        gpus = known.devices
    return "gpu", known.seconds * known.devices / gpus
