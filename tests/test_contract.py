"""The trial contract: one definition of names and rules, used by every writer and reader."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow_store import empty_store
from recorded_sweep import record_sweep
from sweep_helpers import trial_meta as meta

from contract import arms, names, outcome, selection
from contract.outcome import Status, ended_outcome, tune_trial_status
from contract.trial import TrialMeta, trial_config
from sweeps.spec.load import parse_spec

ROOT = Path(__file__).parents[1]


# ---- one definition -----------------------------------------------------------------------


def test_writers_and_readers_use_the_one_definition_of_each_name() -> None:
    import analysis.guards
    import analysis.schema
    import sweeps.spec.schema
    import sweeps.tracking.callback

    assert sweeps.tracking.callback.EPOCH_METRICS is names.EPOCH_METRICS
    assert analysis.schema.METRIC_KEYS is names.EPOCH_METRICS
    assert analysis.guards.DYNAMIC_METHODS is arms.DYNAMIC_METHODS
    assert list(analysis.schema.TAG_COLUMNS) == list(names.TRIAL_TAGS)
    assert set(analysis.schema.STATUSES) == set(outcome.STATUSES) - {"pending"}
    searchable = sweeps.spec.schema.SearchConfig.model_fields["metric"].annotation.__args__
    assert searchable == names.SEARCH_METRICS


def test_every_tag_the_tracker_writes_is_one_the_reader_knows() -> None:
    from sparseopt.config import TrainConfig
    from sweeps.tracking.runs import cell_tags, trial_tags

    train = TrainConfig().model_dump(mode="json")
    written = set(trial_tags(meta(), train)) | set(cell_tags(meta()))
    known = set(names.TRIAL_TAGS) | {names.Tag.ROLE, names.Tag.STATUS}
    assert written <= known, written - known


def test_the_metrics_a_trial_reports_are_the_ones_the_tracker_logs() -> None:
    from sparseopt.engine import EvalStats, TrainStats, epoch_metrics

    stats = EvalStats(1.0, 50.0, 90.0, 10)
    metrics = epoch_metrics(1, TrainStats(1.0, 50.0, 10, 1.0), stats, stats, 0.1, 0.9, 0.2)
    assert set(metrics) - {"epoch"} <= set(names.EPOCH_METRICS)


def test_tracker_and_analysis_load_no_torch() -> None:
    code = (
        "import sys, sweeps.tracking.callback, analysis.report, contract.selection;"
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
    seeds = [(Status.FINISHED, 80.0), (Status.FAILED, 70.0), (Status.DIVERGED, 90.0)]
    assert selection.trial_score(selection.LrTrial(0, 0.1, seeds), "val_acc1", 3) == 40.0
    only_failed = selection.LrTrial(0, 0.1, [(Status.FAILED, 1.0)])
    assert selection.trial_score(only_failed, "val_acc1", 1) is None


F, D, X, R = Status.FINISHED, Status.DIVERGED, Status.FAILED, Status.RUNNING


def _trial(key: int, lr: float, *seeds: tuple[Status, float | None]) -> selection.LrTrial:
    return selection.LrTrial(key, lr, list(seeds))


def test_an_lr_trial_scores_the_mean_of_its_counted_seeds_once_enough_have_ended() -> None:
    ranking = selection.rank_lr_trials(
        [
            _trial(0, 0.1, (F, 90.0), (D, 95.0), (X, 99.0)),  # (90 + 0) / 2: failed not counted
            _trial(1, 0.3, (F, 80.0), (F, 70.0), (R, 99.0)),  # 2 of 3 ended: not ranked
            _trial(2, 1.0, (X, 99.0), (X, 99.0), (X, 99.0)),  # ended, none counts: not ranked
            _trial(3, 0.03, (F, 50.0), (Status.STOPPED, 40.0), (F, 30.0)),
        ],
        "val_acc1",
        seeds_expected=3,
    )
    assert ranking.scores == {0: 45.0, 1: None, 2: None, 3: 40.0}
    assert (ranking.best, ranking.tied) == (0, (0,))


def test_a_loss_is_minimised_and_a_diverged_seed_ranks_its_lr_last() -> None:
    ranking = selection.rank_lr_trials(
        [_trial(0, 0.1, (F, 0.5), (D, 0.01)), _trial(1, 0.3, (F, 0.9), (F, 0.7))],
        "val_loss",
        seeds_expected=2,
    )
    assert ranking.scores == {0: math.inf, 1: 0.8} and ranking.best == 1


GRID = (0.03, 0.1, 0.3, 1.0)  # log-middle: sqrt(0.03 * 1) = 0.1732


@pytest.mark.parametrize(
    ("tied_lrs", "winner"),
    [
        ((0.3, 1.0), 0.3),  # |ln(0.3/0.1732)| = 0.55 < |ln(1/0.1732)| = 1.75
        ((1.0, 0.03), 0.03),  # 1.75 vs |ln(0.03/0.1732)| = 1.75: equally near, the smaller
        ((0.3, 0.1), 0.1),  # 0.1 and 0.3 both 0.549 from the middle (0.1 · 0.3 = 0.03 · 1)
        ((1.0, 0.3, 0.1), 0.1),
    ],
)
def test_ties_go_to_the_lr_nearest_the_log_middle_of_the_grid_then_the_smaller(
    tied_lrs: tuple[float, ...], winner: float
) -> None:
    trials = [_trial(i, lr, (F, 97.5), (F, 97.0)) for i, lr in enumerate(tied_lrs)]
    trials.append(_trial(9, 0.03 if 0.03 not in tied_lrs else 1.0, (F, 90.0), (F, 90.0)))
    ranking = selection.rank_lr_trials(trials, "val_acc1", seeds_expected=2, grid=GRID)
    assert ranking.best is not None and trials[ranking.best].lr == winner  # type: ignore[index]
    assert sorted(trials[key].lr for key in ranking.tied) == sorted(tied_lrs)  # type: ignore[index]
    assert trials[ranking.tied[0]].lr == winner  # type: ignore[index]


def test_without_a_grid_ties_use_the_log_middle_of_the_ranked_lrs() -> None:
    # ranked lrs 0.01 .. 1: middle 0.1, so of the tied 0.01 and 0.3 the nearer is 0.3
    trials = [
        _trial(0, 0.01, (F, 80.0)),
        _trial(1, 0.3, (F, 80.0)),
        _trial(2, 1.0, (F, 70.0)),
    ]
    ranking = selection.rank_lr_trials(trials, "val_acc1", seeds_expected=1)
    assert (ranking.best, ranking.tied) == (1, (1, 0))
    # with the grid 0.001 .. 1 (middle 0.0316) the same tie goes to 0.01
    assert selection.rank_lr_trials(trials, "val_acc1", 1, grid=(0.001, 1.0)).best == 0


def test_scores_equal_up_to_float_rounding_tie_and_others_do_not() -> None:
    # the same correct-image counts summed in another order differ in the last bits
    first = [(F, 0.1), (F, 0.2), (F, 0.7)]
    second = [(F, 0.7), (F, 0.1), (F, 0.2 + 1e-15)]
    tie = selection.rank_lr_trials(
        [_trial(0, 1.0, *first), _trial(1, 0.1, *second)], "val_acc1", 3, grid=(0.1, 1.0)
    )
    assert tie.tied == (1, 0)  # equally near the middle 0.316: the smaller lr first
    apart = selection.rank_lr_trials(
        [_trial(0, 1.0, *first), _trial(1, 0.1, (F, 0.1), (F, 0.2), (F, 0.7 - 1e-6))],
        "val_acc1",
        3,
    )
    assert (apart.best, apart.tied) == (0, (0,))


def test_rank_lr_trials_rejects_what_it_cannot_rank() -> None:
    assert selection.rank_lr_trials([], "val_acc1", 1) == selection.LrRanking({}, None, ())
    with pytest.raises(ValueError, match="seeds_expected"):
        selection.rank_lr_trials([_trial(0, 0.1, (F, 1.0))], "val_acc1", 0)
    with pytest.raises(ValueError, match="unique"):
        selection.rank_lr_trials([_trial(0, 0.1), _trial(0, 0.3)], "val_acc1", 1)
    with pytest.raises(ValueError, match="positive"):
        selection.rank_lr_trials([_trial(0, 0.0, (F, 1.0))], "val_acc1", 1)


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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The val_loss sweep recorded once for the tests that only read it."""
    root = tmp_path_factory.mktemp("contract")
    empty_store(root / "mlflow.db")
    spec = _val_loss_spec(root)
    return spec, record_sweep(spec, results=_results)


def test_a_diverged_trial_is_diverged_in_status_mlflow_and_report(recorded, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from analysis.export import export_experiment
    from sweeps.run.status import cell_statuses

    spec, sweep = recorded
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


def test_a_val_loss_sweep_gets_one_lr_from_searcher_status_and_report(
    recorded, tmp_path: Path
) -> None:
    from analysis.compare import compare
    from analysis.export import export_experiment
    from sweeps.run.status import cell_statuses

    spec, sweep = recorded
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


MID_CELL_VAL_ACC1 = {
    (0.01, 0): 90.0,
    (0.01, 1): 99.0,
    (0.1, 0): 80.0,
    (0.1, 1): 70.0,
    (1.0, 0): 75.0,
    (1.0, 1): 75.0,
}
"""Final val_acc1 by (lr, seed) of the sweep stopped mid-cell: lr 0.01's seed 1 never ends."""


def _mid_cell_results(number: int, trial: TrialMeta) -> list[dict[str, Any]]:
    value = MID_CELL_VAL_ACC1[(trial.lr, trial.seed)]
    first = {"epoch": 1, "val_acc1": value - 1, "test_acc1": value, "train_loss": 1.0}
    return [first, {"epoch": 2, "val_acc1": value, "test_acc1": value, "train_loss": 0.5}]


def test_a_sweep_stopped_mid_cell_gets_one_lr_ranking_everywhere(tmp_path: Path) -> None:
    """lr 0.01 leads on its one ended seed but its other seed still runs: ranked nowhere.
    0.1 (80, 70) and 1.0 (75, 75) tie at 75; the tie goes to 0.1, the log-middle of the lrs
    the cell tried. Searcher, `status`, the cell run's `lr` tag and the report agree."""
    from mlflow.tracking import MlflowClient

    from analysis.compare import comparable, compare
    from analysis.export import export_experiment
    from analysis.lr_choice import cell_lr_trials
    from sweeps.run.status import cell_statuses

    empty_store(tmp_path / "mlflow.db")
    spec = parse_spec(
        {
            **_val_loss_spec(tmp_path).model_dump(mode="json"),
            "name": "midcell",
            "search": {"lr": {"grid": [0.01, 0.1, 1.0]}, "metric": "val_acc1"},
        }
    )
    sweep = record_sweep(
        spec,
        results=_mid_cell_results,
        running=lambda trial: (trial.lr, trial.seed) == (0.01, 1),
    )
    cell = spec.cells()[0].cell_id

    ranking = sweep.searcher.ranking(cell)
    lr_of = {trial.number: trial.params["lr"] for trial in sweep.searcher.study(cell).trials}
    assert {lr_of[k] for k, score in ranking.scores.items() if score is not None} == {0.1, 1.0}
    assert (lr_of[ranking.best], ranking.scores[ranking.best]) == (0.1, 75.0)
    assert [lr_of[key] for key in ranking.tied] == [0.1, 1.0]

    (row,) = cell_statuses(spec, sweep.trials)
    assert (row.best_lr, row.best_value, row.count(Status.RUNNING)) == (0.1, 75.0, 1)

    client = MlflowClient(spec.tracking_uri)
    (cell_run,) = client.search_runs([sweep.experiment_id], "tags.`sparsesweep.role` = 'cell'")
    assert cell_run.data.tags["lr"] == "0.1"
    assert cell_run.data.tags["sparsesweep.trials_ended"] == "5"

    exported = export_experiment(spec.tracking_uri, spec.name, tmp_path / "export")
    trials = exported.tables.trials.to_pandas()
    report_trials = cell_lr_trials(comparable(trials), "val_acc1")
    report_ranking = report_trials.rank("val_acc1")
    ranked = {
        report_trials.lrs[k] for k, score in report_ranking.scores.items() if score is not None
    }
    assert ranked == {0.1, 1.0}
    comparison = compare(trials, exported.tables.epochs.to_pandas(), metric="val_acc1")
    assert comparison.selection[["lr", "selection_score", "tied_lrs"]].values.tolist() == [
        [0.1, 75.0, "0.1,1"]
    ]


def test_status_ranks_only_lr_trials_whose_seeds_all_ended(tmp_path: Path) -> None:
    from sweeps.run.status import cell_statuses

    spec = _val_loss_spec(tmp_path)
    config = {"meta": meta(cell=spec.cells()[0].cell_id, lr_trial=0).to_dict()}
    running = SimpleNamespace(config=config, status="RUNNING", last_result={"val_loss": 0.1})
    (row,) = cell_statuses(spec, [running])
    assert row.best_lr is None and row.count(Status.RUNNING) == 1
    assert row.count(Status.PENDING) == 5
