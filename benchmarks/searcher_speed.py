"""How the sweep searcher's per-call latency grows as cells accumulate finished trials.

Fills every cell of a small sweep (one seed, so each Tune trial is one Optuna trial) to 1, 100
and 1,000 finished trials through the searcher's own suggest/complete calls, then times, at
each level: `suggest` (an Optuna ask: TPE samples from all finished trials), `on_trial_complete`
(an Optuna tell) and `save` (the pickle Tune writes with every experiment checkpoint); then an
idle `suggest` poll (nothing to hand out, which Tune calls often) with 10 and 200 cells. Target: suggest/complete
≤ 50 ms at 1,000 finished trials per cell.

    .venv/bin/python benchmarks/searcher_speed.py [--levels 1 100 1000] [--cells 4] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from sweeps.run.search import SweepSearcher
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec


def build_spec(cells: int, trials_per_cell: int) -> SweepSpec:
    """A digits/mlp sweep with `cells` rigl cells (one per budget), one seed, TPE over lr."""
    return parse_spec(
        {
            "name": "bench",
            "base": {"data": {"name": "digits"}, "model": {"name": "mlp"}},
            "grid": {
                "arms": ["rigl"],
                "sparsities": [0.9],
                "budgets": list(range(10, 10 + cells)),
                "seeds": [0],
            },
            "search": {
                "lr": {"low": 1e-3, "high": 1.0, "log": True},
                "trials_per_cell": trials_per_cell,
            },
        }
    )


def objective(config: dict[str, Any]) -> float:
    """A noisy-free bowl in log-lr: enough structure for TPE to do real work."""
    return 100.0 - (config["meta"]["lr"] - 0.1) ** 2 * 1e3


class Bench:
    """Drives a searcher like Tune does, with fresh trial ids."""

    def __init__(self, spec: SweepSpec) -> None:
        self.searcher = SweepSearcher(spec)
        self.count = 0

    def suggest(self) -> tuple[str, Any]:
        trial_id = f"t{self.count:07d}"
        self.count += 1
        return trial_id, self.searcher.suggest(trial_id)

    def fill(self, target_per_cell: int, cells: int) -> None:
        """Suggest and complete one trial at a time until each cell has `target` finished."""
        while self.count < target_per_cell * cells:
            trial_id, config = self.suggest()
            self.searcher.on_trial_complete(trial_id, {"val_acc1": objective(config)})


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1e3, result


def measure(bench: Bench, repeats: int) -> dict[str, float]:
    """Median / max latencies (ms) of suggest and complete, and the save cost, at this level."""
    suggest_ms, complete_ms = [], []
    handed = []
    for _ in range(repeats):
        ms, (trial_id, config) = timed(bench.suggest)
        suggest_ms.append(ms)
        handed.append((trial_id, config))
    for trial_id, config in handed:
        ms, _ = timed(
            lambda trial_id=trial_id, config=config: bench.searcher.on_trial_complete(
                trial_id, {"val_acc1": objective(config)}
            )
        )
        complete_ms.append(ms)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.pkl")
        save_ms, _ = timed(lambda: bench.searcher.save(path))
        size_mb = os.path.getsize(path) / 1e6
    return {
        "suggest_med": statistics.median(suggest_ms),
        "suggest_max": max(suggest_ms),
        "complete_med": statistics.median(complete_ms),
        "complete_max": max(complete_ms),
        "save_ms": save_ms,
        "save_mb": size_mb,
    }


def idle_poll_ms(cells: int, repeats: int) -> float:
    """Median cost of a `suggest` that finds nothing to do (all trials handed out, running)."""
    bench = Bench(build_spec(cells, 1))
    while isinstance(bench.suggest()[1], dict):
        pass
    return statistics.median(timed(bench.suggest)[0] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    top = max(args.levels) + 2 * args.repeats
    bench = Bench(build_spec(args.cells, top))
    print(
        f"{args.cells} cells, TPE over lr (seeded), 1 seed per lr trial, {args.repeats} calls per level"
    )
    print()
    print(
        "| finished trials / cell | suggest ms (median / max) | complete ms (median / max) "
        "| save ms | state MB |"
    )
    print("|---:|---:|---:|---:|---:|")
    for level in sorted(args.levels):
        bench.fill(level, args.cells)
        row = measure(bench, args.repeats)
        print(
            f"| {level} | {row['suggest_med']:.2f} / {row['suggest_max']:.2f} "
            f"| {row['complete_med']:.2f} / {row['complete_max']:.2f} "
            f"| {row['save_ms']:.1f} | {row['save_mb']:.2f} |"
        )
    print()
    for cells in (10, 200):
        print(
            f"idle suggest poll, {cells} cells all waiting: {idle_poll_ms(cells, args.repeats):.3f} ms"
        )


if __name__ == "__main__":
    main()
