"""Build small MLflow stores whose trial runs follow docs/conventions.md, with known metrics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow_store import empty_store

from analysis.fetch import ExperimentRecords, RunRecord, metric_frame
from contract.names import ACTIVITY_METRICS

MLFLOW_STATUS = {
    "finished": "FINISHED",
    "stopped": "KILLED",
    "failed": "FAILED",
    "diverged": "FAILED",
}


@dataclass
class Trial:
    """One trial run. test_acc1 rises by 1 point per epoch to `final_test` at the last epoch.

    `delta_t` and `steps_per_epoch` become tags when set (`steps_per_epoch` is tagged once a
    trial reports, so None stands for a trial that never did); `activity` maps a modifier to
    its `<modifier>_active_frac` per epoch (one value: every epoch the same).
    """

    arm: str
    sparsity: float
    budget: int
    seed: int
    final_test: float
    final_val: float | None = None
    status: str = "finished"
    stage: str = "search"
    lr_trial: int = 0
    lr: float = 0.1
    epochs: int | None = None
    itop: float = 0.5
    last_drop: float = 0.0
    dataset: str = "digits"
    model: str = "small_cnn"
    delta_t: int | None = 10
    steps_per_epoch: int | None = None
    activity: dict[str, float | tuple[float, ...]] = field(default_factory=dict)
    extra_tags: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.arm.split("+")[0]

    @property
    def logged_epochs(self) -> int:
        return self.budget if self.epochs is None else self.epochs

    @property
    def cell(self) -> str:
        return f"{self.dataset}/{self.model}/{self.arm}/s={self.sparsity:g}/e={self.budget}"

    def test_acc1(self, epoch: int) -> float:
        """test_acc1 logged at `epoch` (1-based)."""
        value = self.final_test - (self.logged_epochs - epoch)
        return value + self.last_drop if epoch == self.logged_epochs - 1 else value

    def val_acc1(self, epoch: int) -> float:
        final_val = self.final_test if self.final_val is None else self.final_val
        return final_val - (self.logged_epochs - epoch)

    def train_loss(self, epoch: int) -> float:
        if self.status == "diverged" and epoch == self.logged_epochs:
            return math.nan
        return 2.0 / epoch

    def itop_rate(self, epoch: int) -> float:
        return self.itop * epoch / self.logged_epochs

    def active_frac(self, modifier: str, epoch: int) -> float:
        """`<modifier>_active_frac` logged at `epoch` (1-based)."""
        value = self.activity[modifier]
        return value[epoch - 1] if isinstance(value, tuple) else value

    def metrics(self) -> list[Metric]:
        rows = []
        start = int(time.time() * 1000)
        for epoch in range(1, self.logged_epochs + 1):
            stamp = start + epoch
            values = {
                **{
                    ACTIVITY_METRICS[modifier]: self.active_frac(modifier, epoch)
                    for modifier in self.activity
                },
                "train_loss": self.train_loss(epoch),
                "train_acc1": self.test_acc1(epoch) + 5.0,
                "val_acc1": self.val_acc1(epoch),
                "test_acc1": self.test_acc1(epoch),
                "test_loss": 1.0 / epoch,
                "epoch_lr": self.lr,
                "measured_sparsity": self.sparsity,
                "itop_rate": self.itop_rate(epoch),
                "epoch_time_s": 2.0,
            }
            rows.extend(Metric(key, value, stamp, epoch) for key, value in values.items())
        return rows

    def tags(self, parent_id: str | None) -> dict[str, str]:
        sparseopt = "sparseopt" in self.arm.split("+")
        tags = {
            "sparsesweep.role": "trial",
            "sparsesweep.status": self.status,
            "cell": self.cell,
            "workload": "default",
            "arm": self.arm,
            "method": self.method,
            "preconditioner": "sparseopt" if sparseopt else "none",
            "regrow_scores": "raw",
            "ham": str("ham" in self.arm.split("+")).lower(),
            "grad_renorm": "false",
            "dataset": self.dataset,
            "model": self.model,
            "sparsity": f"{self.sparsity:g}",
            "budget": str(self.budget),
            "seed": str(self.seed),
            "lr": f"{self.lr:.6g}",
            "weight_decay": "0.0005",
            "stage": self.stage,
            "lr_trial": str(self.lr_trial),
            "config_hash": f"h{self.arm}{self.sparsity}{self.budget}{self.seed}{self.lr_trial}",
            "git_commit": "abc123",
            "ray_trial_id": f"t{self.seed}",
            **self.extra_tags,
        }
        if self.delta_t is not None:
            tags["delta_t"] = str(self.delta_t)
        if self.steps_per_epoch is not None:
            tags["steps_per_epoch"] = str(self.steps_per_epoch)
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        return tags


def build_store(root: Path, experiment: str, trials: list[Trial]) -> tuple[str, list[str]]:
    """Create `root/mlflow.db` with a cell run per cell and a child run per trial.

    Returns the tracking URI and the trials' run ids, in the order of `trials`.
    """
    uri = empty_store(root / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        experiment, artifact_location=(root / "artifacts").as_uri()
    )
    cells: dict[str, str] = {}
    run_ids = []
    for trial in trials:
        if trial.cell not in cells:
            cell = client.create_run(
                experiment_id, run_name=trial.cell, tags={"sparsesweep.role": "cell"}
            )
            cells[trial.cell] = cell.info.run_id
        run = client.create_run(
            experiment_id,
            run_name=f"{trial.arm} seed={trial.seed}",
            tags=trial.tags(cells[trial.cell]),
        )
        run_id = run.info.run_id
        params = [Param("optim.lr", str(trial.lr)), Param("seed", str(trial.seed))]
        client.log_batch(run_id, metrics=trial.metrics(), params=params)
        if trial.status != "running":
            client.set_terminated(run_id, MLFLOW_STATUS[trial.status])
        run_ids.append(run_id)
    return uri, run_ids


def _same(left: object, right: object) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    return left == right


def assert_tables_identical(left, right) -> None:
    """Same schema and same values row for row; NaN equals NaN, null only equals null."""
    assert left.schema.equals(right.schema), (left.schema, right.schema)
    assert left.num_rows == right.num_rows
    for name in left.column_names:
        a, b = left.column(name).to_pylist(), right.column(name).to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _same(x, y)]
        assert not bad, f"column {name!r} differs at rows {bad[:5]}: {a[bad[0]]!r} != {b[bad[0]]!r}"


def records_for(trials: list[Trial], experiment: str = "exp") -> ExperimentRecords:
    """The records a store holding `trials` would give, built in memory (run ids run000...)."""
    runs, rows = [], []
    for index, trial in enumerate(trials):
        run_id = f"run{index:03d}"
        status = "RUNNING" if trial.status == "running" else MLFLOW_STATUS[trial.status]
        end = None if trial.status == "running" else 1_000_000
        params = {"optim.lr": str(trial.lr), "seed": str(trial.seed)}
        runs.append(RunRecord(run_id, f"run {index}", status, 0, end, trial.tags("cell"), params))
        rows += [(run_id, m.key, m.step, m.value, m.timestamp) for m in trial.metrics()]
    return ExperimentRecords("1", experiment, runs, metric_frame(rows))


# Planted store: group digits/small_cnn/rigl, arms rigl and rigl+sparseopt, budgets 2 and 4,
# seeds 0-4. At s=0.9 the SparseOpt arm differs from its baseline by NULL (mean 0.01, no
# effect); at s=0.95 by PLANT (mean 2.24). Extra: seed 4 missing for rigl+sparseopt s=0.95
# e=4, a failed, a running and a diverged run (seed 5), and one run whose best epoch is not
# its last.
NOISE = (0.0, 0.4, -0.3, 0.2, -0.1)
NULL = (0.5, -0.4, 0.3, -0.6, 0.25)
PLANT = (2.0, 2.5, 1.5, 3.0, 2.2)
BASE = {0.9: {2: 60.0, 4: 64.0}, 0.95: {2: 55.0, 4: 56.0}}
DIFFS = {0.9: NULL, 0.95: PLANT}


def planted_trials() -> list[Trial]:
    """The planted-effect sweep described above."""
    trials = []
    for sparsity, diffs in DIFFS.items():
        for budget in (2, 4):
            for seed in range(5):
                base = BASE[sparsity][budget] + NOISE[seed]
                drop = 3.0 if (sparsity, budget, seed) == (0.9, 4, 0) else 0.0
                trials.append(Trial("rigl", sparsity, budget, seed, base, last_drop=drop))
                if (sparsity, budget, seed) != (0.95, 4, 4):
                    trials.append(
                        Trial(
                            "rigl+sparseopt", sparsity, budget, seed, base + diffs[seed], itop=0.7
                        )
                    )
    trials.append(Trial("rigl", 0.9, 2, 5, 10.0, status="failed", epochs=1))
    trials.append(Trial("rigl+sparseopt", 0.9, 4, 5, 30.0, status="running", epochs=2))
    trials.append(Trial("rigl+sparseopt", 0.95, 2, 5, 30.0, status="diverged"))
    return trials


def lr_search_trials() -> list[Trial]:
    """SET at s=0.9: an lr search with 2 lr trials x 3 seeds per cell at budget 3, and at
    budget 6 one search lr trial plus stage=final runs (seeds 10-12).

    set: lr_trial 1 has the better val (74 vs 71) and the worse test (59 vs 61) -> chosen.
    set+sparseopt: lr_trial 1 has val 80 on two seeds but one diverged (counts 0 -> 53.3),
    so lr_trial 0 (val 77, test 64) is chosen.
    """
    trials = []
    for seed in range(3):
        trials.append(Trial("set", 0.9, 3, seed, 60.0 + seed, 70.0 + seed, lr_trial=0, lr=0.1))
        trials.append(Trial("set", 0.9, 3, seed, 58.0 + seed, 73.0 + seed, lr_trial=1, lr=0.05))
        trials.append(
            Trial("set+sparseopt", 0.9, 3, seed, 63.0 + seed, 76.0 + seed, lr_trial=0, lr=0.1)
        )
        status = "diverged" if seed == 2 else "finished"
        trials.append(
            Trial("set+sparseopt", 0.9, 3, seed, 62.0, 80.0, status=status, lr_trial=1, lr=0.05)
        )
    for arm, offset in (("set", 0.0), ("set+sparseopt", 1.5)):
        trials.append(Trial(arm, 0.9, 6, 0, 50.0, 90.0, lr_trial=0, lr=0.2))
        for seed in (10, 11, 12):
            trials.append(
                Trial(
                    arm, 0.9, 6, seed, 65.0 + offset + seed / 10, stage="final", lr_trial=0, lr=0.2
                )
            )
    return trials


VIEW_TEST = {  # (arm, lr) -> (test_acc1 at seed 0, val_acc1): test rises by 1 per seed
    ("rigl", 0.1): (60.0, 70.0),
    ("rigl", 0.3): (59.0, 69.0),
    ("rigl+sparseopt", 0.1): (60.5, 71.0),
    ("rigl+sparseopt", 0.3): (62.0, 75.0),
    ("rigl+sparseopt", 1.0): (40.0, 50.0),
}


def views_trials() -> list[Trial]:
    """RigL at s=0.9, seeds 0-2 searched lr 0.1 (lr_trial 0) and 0.3 (lr_trial 1), plus 1.0
    (lr_trial 2) for rigl+sparseopt only, then a final stage on seeds 10 and 11.

    Budget 3: val picks 0.1 for rigl (70 vs 69) and 0.3 for rigl+sparseopt (75 vs 71, 50):
    the best-lr view compares final runs at 0.3 vs 0.1 (61.33 + s/10 vs 60 + s/10: +1.33).
    Common lrs 0.1 (+0.5 on the search seeds: only rigl ran 0.1 in the final stage) and 0.3
    (+3.0); common scores 70.5 and 72, so the best common lr is 0.3.
    Budget 6: the same search, but both arms' final stage runs at 0.3 (65 + s/10 vs
    66 + s/10), so the matched view at 0.3 pairs the final seeds 10 and 11 (+1.0).
    """
    trials = []
    for budget in (3, 6):
        for (arm, lr), (test, val) in VIEW_TEST.items():
            lr_trial = (0.1, 0.3, 1.0).index(lr)
            trials += [
                Trial(arm, 0.9, budget, seed, test + seed, val, lr_trial=lr_trial, lr=lr)
                for seed in range(3)
            ]
    finals = {
        (3, "rigl"): (0.1, 0, 60.0),
        (3, "rigl+sparseopt"): (0.3, 1, 61.33),
        (6, "rigl"): (0.3, 1, 65.0),
        (6, "rigl+sparseopt"): (0.3, 1, 66.0),
    }
    for (budget, arm), (lr, lr_trial, base) in finals.items():
        trials += [
            Trial(arm, 0.9, budget, seed, base + seed / 10, stage="final", lr_trial=lr_trial, lr=lr)
            for seed in (10, 11)
        ]
    return trials


CLEAN_LRS = (0.05, 0.1, 0.2)


def clean_trials(
    arms: tuple[str, ...] = ("rigl", "rigl+sparseopt"), seeds: int = 10, **fields: object
) -> list[Trial]:
    """A sweep no verdict guard objects to: each arm searched lrs 0.05, 0.1 and 0.2 on `seeds`
    seeds (10: enough), val picks the middle lr 0.1 for every arm, ΔT = 100 steps >= 20 steps
    per epoch. The second arm is 1 point (test) better; `fields` override every Trial's."""
    trials = []
    for offset, arm in enumerate(arms):
        for lr_trial, lr in enumerate(CLEAN_LRS):
            val = 80.0 if lr == 0.1 else 70.0
            trials += [
                Trial(
                    arm,
                    0.9,
                    2,
                    seed,
                    60.0 + offset + lr_trial + seed / 10,
                    val,
                    lr_trial=lr_trial,
                    lr=lr,
                    **{"delta_t": 100, "steps_per_epoch": 20, **fields},
                )
                for seed in range(seeds)
            ]
    return trials
