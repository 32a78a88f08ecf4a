"""MLflow is where the comparison lives: cell and curve runs aggregate a sweep's trials.

A sweep is recorded through the real searcher and tracking callback (no training, see
tests/recorded_sweep.py); its cell and curve runs must hold each step once, with the numbers
`sparsesweep report` computes from the same runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow_store import empty_store
from recorded_sweep import record_sweep

from analysis.compare import compare
from analysis.export import export_experiment
from contract.trial import TrialMeta
from sweeps.spec.load import parse_spec
from sweeps.tracking.runs import git_commit

BUDGETS = (2, 4)
ARMS = ("rigl", "rigl+sparseopt")


def spec_payload(tmp_path: Path, seeds: list[int]) -> dict[str, Any]:
    return {
        "name": "dash",
        "storage_path": str(tmp_path / "results"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "base": {
            "data": {"name": "digits"},
            "model": {"name": "mlp"},
            "schedule": {"warmup_epochs": 0.5},
        },
        "grid": {"arms": list(ARMS), "sparsities": [0.9], "budgets": list(BUDGETS), "seeds": seeds},
        "search": {"lr": {"grid": [0.1, 0.3]}},
    }


def results(number: int, meta: TrialMeta) -> list[dict[str, Any]]:
    """Distinct, known values: accuracy grows with the epoch, the seed and (for lr 0.3) the lr;
    SparseOpt adds 1.5 points; one rigl seed at lr 0.3 diverges in its last epoch."""
    bonus = 1.5 if "sparseopt" in meta.arm else 0.0
    rows = []
    for epoch in range(1, meta.budget + 1):
        if meta.arm == "rigl" and meta.lr == 0.3 and meta.seed == 2 and epoch == meta.budget:
            rows.append({"epoch": epoch, "val_acc1": math.nan, "diverged": True})
            break
        accuracy = 50 + 3 * epoch + meta.seed + 10 * meta.lr + bonus + 0.01 * meta.budget
        rows.append(
            {
                "epoch": epoch,
                "val_acc1": accuracy - 1,
                "test_acc1": accuracy,
                "test_loss": 1 / accuracy,
                "train_loss": 1 / epoch,
            }
        )
    return rows


def runs_by_role(uri: str, experiment_id: str, role: str) -> list[Any]:
    return MlflowClient(uri).search_runs(
        [experiment_id], f"tags.`sparsesweep.role` = '{role}'", max_results=1000
    )


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def record(root: Path) -> tuple[Any, Any]:
    """The sweep on seeds 0-2, recorded into an empty store under `root`."""
    empty_store(root / "mlflow.db")
    spec = parse_spec(spec_payload(root, [0, 1, 2]))
    return spec, record_sweep(spec, results=results)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The sweep recorded once for the tests that only read it."""
    return record(tmp_path_factory.mktemp("aggregates"))


def test_cell_runs_hold_the_seed_means_of_the_compared_runs_once(recorded, tmp_path: Path) -> None:
    spec, sweep = recorded
    uri = spec.tracking_uri
    cells = runs_by_role(uri, sweep.experiment_id, "cell")
    assert len(cells) == len(ARMS) * len(BUDGETS)
    exported = export_experiment(uri, spec.name, tmp_path / "export")
    comparison = compare(
        exported.tables.trials.to_pandas(),
        exported.tables.epochs.to_pandas(),
        metric=exported.manifest["search_metric"],
    )
    curves = comparison.curves
    for run in cells:
        tags = run.data.tags
        chosen = comparison.selection[
            (comparison.selection["arm"] == tags["arm"])
            & (comparison.selection["budget"] == int(tags["budget"]))
        ]
        assert float(tags["lr"]) == chosen["lr"].item()
        assert tags["sparsesweep.trials_ended"] == tags["sparsesweep.trials_expected"] == "6"
        assert run.data.params["arm"] == tags["arm"]
        expected = curves[
            (curves["arm"] == tags["arm"]) & (curves["budget"] == int(tags["budget"]))
        ]
        logged = history(uri, run.info.run_id, "test_acc1_mean")
        assert [step for step, _ in logged] == list(range(1, int(tags["budget"]) + 1))
        assert [value for _, value in logged] == pytest.approx(expected["mean"].tolist())
        seeds = history(uri, run.info.run_id, "n_seeds")
        assert [value for _, value in seeds] == expected["n"].astype(float).tolist()
        for key in ("val_acc1_mean", "test_loss_mean", "test_acc1_std"):
            assert [step for step, _ in history(uri, run.info.run_id, key)] == [
                step for step, _ in logged
            ]


def test_curve_runs_equal_what_the_report_computes(recorded, tmp_path: Path) -> None:
    spec, sweep = recorded
    uri = spec.tracking_uri
    curves = {run.data.tags["arm"]: run for run in runs_by_role(uri, sweep.experiment_id, "curve")}
    assert set(curves) == set(ARMS)
    exported = export_experiment(uri, spec.name, tmp_path / "export")
    comparison = compare(
        exported.tables.trials.to_pandas(),
        exported.tables.epochs.to_pandas(),
        metric=exported.manifest["search_metric"],
    )
    summary = comparison.summary[comparison.summary["measure"] == "final"]
    for arm, run in curves.items():
        rows = summary[summary["arm"] == arm].sort_values("budget")
        for key, column in (
            ("test_acc1_mean", "mean"),
            ("test_acc1_mean_ci_low", "ci_low"),
            ("test_acc1_mean_ci_high", "ci_high"),
            ("test_acc1_mean_n", "n"),
        ):
            logged = history(uri, run.info.run_id, key)
            assert [step for step, _ in logged] == list(BUDGETS), key
            assert [value for _, value in logged] == pytest.approx(rows[column].tolist()), key
    paired = comparison.paired
    best = paired[
        (paired["view"] == "best lr")
        & (paired["contrast"] == "baseline")
        & (paired["measure"] == "final")
    ].sort_values("budget")
    sparseopt = curves["rigl+sparseopt"].info.run_id
    for key, column in (
        ("vs_baseline_diff", "mean_diff"),
        ("vs_baseline_diff_ci_low", "ci_low"),
        ("vs_baseline_diff_ci_high", "ci_high"),
        ("vs_baseline_diff_n", "n_pairs"),
    ):
        logged = history(uri, sparseopt, key)
        assert [step for step, _ in logged] == list(BUDGETS), key
        assert [value for _, value in logged] == pytest.approx(best[column].tolist()), key
    assert not history(uri, curves["rigl"].info.run_id, "vs_baseline_diff")


def test_every_run_carries_what_mlflow_users_expect(recorded) -> None:
    spec, sweep = recorded
    client = MlflowClient(spec.tracking_uri)
    commit = git_commit()
    for role in ("trial", "cell", "curve"):
        for run in runs_by_role(spec.tracking_uri, sweep.experiment_id, role):
            assert run.data.tags["mlflow.user"], role
            assert run.data.tags["mlflow.source.name"] == "sparsesweep", role
            assert run.data.tags.get("mlflow.source.git.commit") == (
                None if commit == "unknown" else commit.removesuffix("+dirty")
            ), role
            assert "git_commit" not in run.data.tags, role  # MLflow's own tag holds it
            dirty = "true" if commit.endswith("+dirty") else None
            assert run.data.tags.get("sparsesweep.git_dirty") == dirty, role
    note = client.get_experiment(sweep.experiment_id).tags["mlflow.note.content"]
    assert "rigl+sparseopt" in note and "`curve`" in note and "val_acc1" in note


def test_an_extended_sweep_replaces_changed_aggregates_and_logs_each_step_once(
    tmp_path: Path,
) -> None:
    spec, sweep = record(tmp_path)  # its own: extending changes the store
    uri = spec.tracking_uri
    before = {r.info.run_id for r in runs_by_role(uri, sweep.experiment_id, "curve")}
    extended = parse_spec(spec_payload(tmp_path, [0, 1, 2, 3]))
    record_sweep(extended, results=results, extending=sweep)
    for role in ("cell", "curve"):
        for run in runs_by_role(uri, sweep.experiment_id, role):
            for key in run.data.metrics:
                steps = [step for step, _ in history(uri, run.info.run_id, key)]
                assert len(steps) == len(set(steps)), (role, key, steps)
    curves = runs_by_role(uri, sweep.experiment_id, "curve")
    assert {r.info.run_id for r in curves}.isdisjoint(before)  # the 4th seed changed every mean
    cells = runs_by_role(uri, sweep.experiment_id, "cell")
    trials = runs_by_role(uri, sweep.experiment_id, "trial")
    parents = {r.data.tags["mlflow.parentRunId"] for r in trials}
    assert parents == {r.info.run_id for r in cells}
    assert all(r.data.tags["sparsesweep.trials_ended"] == "8" for r in cells)
    frame = pd.DataFrame([r.data.metrics for r in cells])
    assert (frame["n_seeds"] >= 3).all()


def test_documented_queries_find_the_runs_they_promise(recorded) -> None:
    from sweeps.tracking.queries import sweep_queries

    spec, sweep = recorded
    client = MlflowClient(spec.tracking_uri)
    found = {
        question: client.search_runs([sweep.experiment_id], filter_string, max_results=1000)
        for question, filter_string in sweep_queries(spec)
    }
    by_start = {question.split(" (")[0]: runs for question, runs in found.items()}
    trials = by_start["all trials of arm rigl at sparsity 0.9"]
    assert len(trials) == 2 * 2 * 3 and {r.data.tags["arm"] for r in trials} == {"rigl"}
    curves = by_start["the curve runs of sparsity 0.9"]
    assert {r.data.tags["arm"] for r in curves} == set(ARMS)
    assert len(by_start["the cell runs of budget 4"]) == len(ARMS)
    failed = by_start["failed or diverged trials"]
    assert [(r.data.tags["sparsesweep.status"], r.data.tags["seed"]) for r in failed] == [
        ("diverged", "2"),
        ("diverged", "2"),
    ]
    assert len(by_start["diverged trials only"]) == 2


def test_each_curve_run_carries_its_accuracy_vs_budget_figure_drawn_from_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure a curve run logs (drawn again whenever its points change) plots exactly the
    points and interval the run holds as metrics."""
    drawn: dict[str, Any] = {}
    log_figure = MlflowClient.log_figure

    def spy(client: MlflowClient, run_id: str, figure: Any, artifact_file: str) -> None:
        drawn[run_id] = figure  # the last one drawn for each run
        log_figure(client, run_id, figure, artifact_file)

    monkeypatch.setattr(MlflowClient, "log_figure", spy)
    empty_store(tmp_path / "mlflow.db")
    payload = spec_payload(tmp_path, [0, 1])
    payload["grid"]["arms"] = ["rigl"]
    payload["search"] = {"lr": {"grid": [0.1]}}
    spec = parse_spec(payload)
    sweep = record_sweep(spec, results=results)
    uri = spec.tracking_uri
    [curve] = runs_by_role(uri, sweep.experiment_id, "curve")
    run_id = curve.info.run_id
    names = [item.path for item in MlflowClient(uri).list_artifacts(run_id)]
    assert "accuracy_vs_budget.png" in names
    [ax] = drawn[run_id].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("budget (epochs)", "test top-1 (%)")
    [line] = ax.lines
    means = history(uri, run_id, "test_acc1_mean")
    assert [step for step, _ in means] == list(line.get_xdata()) == list(BUDGETS)
    assert list(line.get_ydata()) == pytest.approx([value for _, value in means])
    [band] = ax.collections  # the interval, filled between its low and high ends
    corners = band.get_paths()[0].vertices
    lows = history(uri, run_id, "test_acc1_mean_ci_low")
    highs = history(uri, run_id, "test_acc1_mean_ci_high")
    for (budget, low), (_, high) in zip(lows, highs, strict=True):
        at = corners[corners[:, 0] == budget][:, 1]
        assert (at.min(), at.max()) == pytest.approx((low, high))
        assert low < high
    assert "n=2" in ax.get_legend().get_texts()[0].get_text()


def test_the_sender_does_not_import_matplotlib() -> None:
    """matplotlib is imported only when a curve run's figure is drawn (not by the driver's
    import of the tracker)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import sys, sweeps.tracking.callback; print('matplotlib' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"
