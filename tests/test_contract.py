"""The trial contract: one definition of names and rules, used by every writer and reader."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from recorded_sweep import record_sweep
from sweep_helpers import trial_meta as meta

from contract import arms, names, outcome, selection
from contract.outcome import Status, ended_outcome, tune_trial_status
from contract.trial import TrialMeta, trial_config
from sweeps.spec import parse_spec

ROOT = Path(__file__).parents[1]


# ---- one definition -----------------------------------------------------------------------


def test_writers_and_readers_use_the_one_definition_of_each_name() -> None:
    import analysis.guards
    import analysis.schema
    import sweeps.spec
    import sweeps.tracking

    assert sweeps.tracking.EPOCH_METRICS is names.EPOCH_METRICS
    assert analysis.schema.METRIC_KEYS is names.EPOCH_METRICS
    assert tuple(analysis.guards.DYNAMIC_METHODS) == arms.DYNAMIC_METHODS
    assert list(analysis.schema.TAG_COLUMNS) == list(names.TRIAL_TAGS)
    assert set(analysis.schema.STATUSES) == set(outcome.STATUSES) - {"pending"}
    searchable = sweeps.spec.SearchConfig.model_fields["metric"].annotation.__args__
    assert searchable == names.SEARCH_METRICS


def test_every_tag_the_tracker_writes_is_one_the_reader_knows() -> None:
    from sparseopt.config import TrainConfig
    from sweeps.mlflow_runs import cell_tags, trial_tags

    train = TrainConfig().model_dump(mode="json")
    written = set(trial_tags(meta(), train, "abc")) | set(cell_tags(meta()))
    known = set(names.TRIAL_TAGS) | {names.Tag.ROLE, names.Tag.STATUS}
    assert written <= known, written - known


def test_the_metrics_a_trial_reports_are_the_ones_the_tracker_logs() -> None:
    from sparseopt.engine import EvalStats, TrainStats, epoch_metrics

    stats = EvalStats(1.0, 50.0, 90.0, 10)
    metrics = epoch_metrics(1, TrainStats(1.0, 50.0, 10, 1.0), stats, stats, 0.1, 0.9, 0.2)
    assert set(metrics) - {"epoch"} <= set(names.EPOCH_METRICS)


def test_tracker_and_analysis_load_no_torch() -> None:
    code = (
        "import sys, sweeps.tracking, analysis.report, contract.selection;"
        "bad = [m for m in ('torch', 'sparseopt') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- trial meta, outcome -------------------------------------------------------------------


def test_trial_meta_round_trips_and_names_what_is_missing() -> None:
    original = meta(stage="final", lr_trial=3)
    config = trial_config({"epochs": 2}, original)
    assert TrialMeta.of(config) == original
    broken = dict(config["meta"])
    del broken["budget"]
    with pytest.raises(ValueError, match=r"missing keys \['budget'\]"):
        TrialMeta.from_dict(broken)
    with pytest.raises(ValueError, match="stage"):
        meta(stage="later")


@pytest.mark.parametrize(
    ("errored", "last", "expected"),
    [
        (True, {"epoch": 2}, Status.FAILED),
        (False, {"epoch": 1, "diverged": True}, Status.DIVERGED),
        (False, {"epoch": 2}, Status.FINISHED),
        (False, {"epoch": 1}, Status.STOPPED),
        (False, {}, Status.FAILED),
        (False, None, Status.FAILED),
    ],
)
def test_ended_outcome(errored: bool, last: dict | None, expected: Status) -> None:
    assert ended_outcome(errored, last, budget=2) is expected


def test_tune_trial_status_maps_every_tune_state() -> None:
    assert tune_trial_status("PENDING", None, 2) is Status.PENDING
    assert tune_trial_status("PAUSED", {"epoch": 1}, 2) is Status.PENDING
    assert tune_trial_status("RUNNING", {"epoch": 1}, 2) is Status.RUNNING
    assert tune_trial_status("TERMINATED", {"epoch": 1}, 2) is Status.STOPPED
    assert tune_trial_status("ERROR", {"epoch": 2}, 2) is Status.FAILED
    assert outcome.MLFLOW_RUN_STATUS[Status.DIVERGED] == "FAILED"


# ---- arms ------------------------------------------------------------------------------------


def test_arm_settings_cover_exactly_the_arm_controlled_keys() -> None:
    arm = "rigl+sparseopt+corrected+cap+normonly+wdscale+clip+rownorm"
    settings = arms.parse_arm(arm).train_settings()
    assert [*settings] == [key for key in arms.ARM_CONTROLLED if key != "sparse.ham"]
    assert settings["sparse.f_max"] == 1.0 and settings["sparse.grad_clip"] == 1.0
    assert settings["sparse.sparseopt_layers"] == "normalized"
    assert settings["sparse.drop_scores"] == "row_normalized"
    plain = arms.parse_arm("set").train_settings()
    assert plain["sparse.f_max"] is None and plain["sparse.drop_scores"] == "magnitude"


def test_the_method_registry_and_its_traits() -> None:
    assert arms.METHODS == ("dense", "static", "set", "rigl")
    assert arms.DYNAMIC_METHODS == ("set", "rigl")
    assert [m for m, t in arms.METHOD_TRAITS.items() if t.gradient_growth] == ["rigl"]
    assert arms.parse_arm("dense").sparse is False and arms.parse_arm("static").sparse is True


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rigl+cap", r"'cap' needs 'sparseopt' \(it modifies SparseOpt\)"),
        ("set+sparseopt+corrected", r"'corrected' needs a method that grows by gradient \(rigl\)"),
        (
            "dense+sparseopt",
            r"'sparseopt' needs a sparse method .* on dense, .*: ham, renorm, clip\)",
        ),
        ("rigl+renorm+clip", "'renorm' and 'clip' exclude each other"),
        ("static+rownorm", r"'rownorm' needs a dynamic \(drop-and-grow\) method \(set, rigl\)"),
        ("rigl+cap+sparseopt", "write modifiers in the order"),
        ("rigl+turbo", "allowed modifiers"),
        ("snip", "allowed methods: dense, static, set, rigl"),
        ("rigl+ham+ham", "repeats a modifier"),
    ],
)
def test_bad_arms_are_refused_naming_what_is_allowed(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arms.parse_arm(name)


def test_allowed_modifiers_follow_the_rules_of_each_method() -> None:
    sparse_options = ["sparseopt", "cap", "normonly", "wdscale", "ham", "renorm", "clip"]
    assert arms.allowed_modifiers("dense") == ["ham", "renorm", "clip"]
    assert arms.allowed_modifiers("static") == sparse_options
    assert arms.allowed_modifiers("set") == [*sparse_options, "rownorm"]
    assert arms.allowed_modifiers("rigl") == [*sparse_options[:1], "corrected", *sparse_options[1:], "rownorm"]  # fmt: skip
    assert arms.SPARSEOPT_OPTIONS == ("corrected", "cap", "normonly", "wdscale")


def test_baselines_and_ablation_contrasts() -> None:
    assert arms.baseline_arm("rigl+sparseopt+corrected+cap+ham") == "rigl+ham"
    assert arms.baseline_arm("rigl+sparseopt+rownorm") == "rigl+rownorm"
    assert arms.is_sparseopt_arm("rigl+sparseopt") and not arms.is_sparseopt_arm("rigl+renorm")
    assert arms.ablation_contrasts("rigl+sparseopt+cap+renorm") == [
        ("cap", "rigl+sparseopt+renorm"),
        ("renorm", "rigl+sparseopt+cap"),
    ]
    assert arms.ablation_contrasts("rigl+renorm") == [("renorm", "rigl")]
    assert arms.ablation_contrasts("rigl+sparseopt+rownorm") == [("rownorm", "rigl+sparseopt")]


# ---- the lr-selection rule -----------------------------------------------------------------


def test_selection_rule_scores_diverged_seeds_as_the_worst_value() -> None:
    assert selection.seed_score(Status.DIVERGED, 99.0, "val_acc1") == 0.0
    assert selection.seed_score(Status.DIVERGED, 0.01, "val_loss") == math.inf
    assert selection.seed_score(Status.FAILED, 90.0, "val_acc1") is None
    assert selection.seed_score(Status.STOPPED, 40.0, "val_acc1") == 40.0
    assert selection.seed_score(Status.FINISHED, math.nan, "val_acc1") is None
    assert selection.group_score([80.0, None, 0.0]) == 40.0
    assert selection.group_score([None]) is None
    assert selection.best_key({2: 1.0, 0: 1.0, 1: 3.0}, "val_loss") == 0
    assert selection.best_key({2: 1.0, 0: 1.0, 1: 3.0}, "val_acc1") == 1
    assert selection.best_key({0: None}, "val_acc1") is None


# ---- the same answer from the searcher, `status`, MLflow and the report ----------------------

LRS = (0.03, 0.1, 0.3)


def _val_loss_spec(tmp_path: Path) -> Any:
    return parse_spec(
        {
            "name": "contract",
            "storage_path": str(tmp_path / "results"),
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "base": {
                "data": {"name": "digits"},
                "model": {"name": "mlp"},
                "schedule": {"warmup_epochs": 0.5},
            },
            "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0, 1]},
            "search": {"lr": {"grid": list(LRS)}, "metric": "val_loss"},
        }
    )


def _results(number: int, trial: TrialMeta) -> list[dict[str, Any]]:
    """lr 0.3 has the best (lowest) val_loss at epoch 1 but diverges on seed 1 in epoch 2;
    lr 0.1 beats 0.03 by a little; test accuracy runs the other way round to val_loss."""
    loss = {0.03: 0.50, 0.1: 0.45, 0.3: 0.10}[trial.lr] + 0.01 * trial.seed
    first = {"epoch": 1, "val_loss": loss + 0.2, "test_acc1": 100 * loss, "train_loss": 1.0}
    if trial.lr == 0.3 and trial.seed == 1:
        return [first, {"epoch": 2, "val_loss": math.nan, "diverged": True}]
    return [first, {"epoch": 2, "val_loss": loss, "test_acc1": 100 * loss, "train_loss": 0.5}]


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Any, Any, Path]:
    spec = _val_loss_spec(tmp_path)
    return spec, record_sweep(spec, results=_results), tmp_path


def test_a_diverged_trial_is_diverged_in_status_mlflow_and_report(recorded) -> None:
    from mlflow.tracking import MlflowClient

    from analysis.export import export_experiment
    from sweeps.status import cell_statuses

    spec, sweep, tmp_path = recorded
    (row,) = cell_statuses(spec, sweep.trials)
    assert (row.count(Status.DIVERGED), row.count(Status.FINISHED)) == (1, 5)
    assert row.count(Status.FAILED) == 0
    client = MlflowClient(spec.tracking_uri)
    runs = client.search_runs([sweep.experiment_id], "tags.`sparsesweep.role` = 'trial'")
    diverged = [run for run in runs if run.data.tags["sparsesweep.status"] == "diverged"]
    assert [(run.data.tags["lr"], run.data.tags["seed"], run.info.status) for run in diverged] == [
        ("0.3", "1", "FAILED")
    ]
    exported = export_experiment(spec.tracking_uri, spec.name, tmp_path / "export")
    statuses = exported.tables.trials.column("status").to_pylist()
    assert sorted(statuses) == ["diverged", *["finished"] * 5]


def test_a_val_loss_sweep_gets_one_lr_from_searcher_status_and_report(recorded) -> None:
    from analysis.compare import compare
    from analysis.export import export_experiment
    from sweeps.status import cell_statuses

    spec, sweep, tmp_path = recorded
    cell = spec.cells()[0].cell_id
    searcher_lr = sweep.searcher.study(cell).best_trial.params["lr"]
    (row,) = cell_statuses(spec, sweep.trials)
    exported = export_experiment(spec.tracking_uri, spec.name, tmp_path / "export")
    assert exported.manifest["search_metric"] == "val_loss"
    comparison = compare(
        exported.tables.trials.to_pandas(),
        exported.tables.epochs.to_pandas(),
        metric=exported.manifest["search_metric"],
    )
    (report_lr,) = comparison.selection["lr"].tolist()
    # 0.3 diverged on one seed (+inf); of the others 0.1 has the lowest mean val_loss.
    assert searcher_lr == row.best_lr == report_lr == 0.1
    assert row.best_value == pytest.approx(0.455)
    assert comparison.selection["basis"].tolist() == ["best lr on val_loss"]


def test_status_ranks_only_lr_trials_whose_seeds_all_ended(tmp_path: Path) -> None:
    from sweeps.status import cell_statuses

    spec = _val_loss_spec(tmp_path)
    config = {"meta": meta(cell=spec.cells()[0].cell_id, lr_trial=0).to_dict()}
    running = SimpleNamespace(config=config, status="RUNNING", last_result={"val_loss": 0.1})
    (row,) = cell_statuses(spec, [running])
    assert row.best_lr is None and row.count(Status.RUNNING) == 1
    assert row.count(Status.PENDING) == 5
