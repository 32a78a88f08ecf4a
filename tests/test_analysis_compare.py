"""analysis.compare on constructed sweeps: selection, summaries, pairs, targets, curves."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from analysis_fixtures import (
    BASE,
    DIFFS,
    NOISE,
    Trial,
    lr_search_trials,
    planted_trials,
    records_for,
)

from analysis.compare import Comparison, compare
from analysis.export import build_tables
from contract.arms import baseline_arm


def _compare(trials: list[Trial], target: float | None = None) -> Comparison:
    tables = build_tables(records_for(trials))
    return compare(tables.trials.to_pandas(), tables.epochs.to_pandas(), target=target)


def _row(frame: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in where.items():
        mask &= frame[name] == value
    found = frame[mask]
    assert len(found) == 1, (where, found)
    return found.iloc[0]


@pytest.fixture(scope="module")
def planted() -> Comparison:
    return _compare(planted_trials())


@pytest.fixture(scope="module")
def lr_search() -> Comparison:
    return _compare(lr_search_trials())


def test_baseline_arm_drops_sparseopt_and_corrected() -> None:
    assert baseline_arm("rigl+sparseopt") == "rigl"
    assert baseline_arm("rigl+sparseopt+corrected+ham") == "rigl+ham"
    assert baseline_arm("set+ham") == "set+ham"


def test_summary_matches_hand_computed_mean_std_over_finished_seeds(planted: Comparison) -> None:
    for sparsity, diffs in DIFFS.items():
        for budget in (2, 4):
            base = [BASE[sparsity][budget] + noise for noise in NOISE]
            arm = [b + d for b, d in zip(base, diffs, strict=True)]
            if (sparsity, budget) == (0.95, 4):
                arm = arm[:4]  # seed 4 missing
            for name, values in (("rigl", base), ("rigl+sparseopt", arm)):
                row = _row(
                    planted.summary, sparsity=sparsity, budget=budget, arm=name, measure="final"
                )
                assert row["n"] == len(values)
                assert row["mean"] == pytest.approx(statistics.mean(values))
                assert row["std"] == pytest.approx(statistics.stdev(values))
                assert min(values) <= row["ci_low"] < row["mean"] < row["ci_high"] <= max(values)


def test_unfinished_runs_are_counted_not_averaged(planted: Comparison) -> None:
    failed = _row(planted.summary, sparsity=0.9, budget=2, arm="rigl", measure="final")
    running = _row(planted.summary, sparsity=0.9, budget=4, arm="rigl+sparseopt", measure="final")
    diverged = _row(planted.summary, sparsity=0.95, budget=2, arm="rigl+sparseopt", measure="final")
    assert (failed["n"], failed["excluded"]) == (5, 1)
    assert (running["n"], running["excluded"]) == (5, 1)
    assert (diverged["n"], diverged["excluded"]) == (5, 1)
    assert planted.partial
    status = _row(planted.status, sparsity=0.9, budget=4, arm="rigl+sparseopt")
    assert (status["finished"], status["running"], status["failed"]) == (5, 1, 0)


def test_best_measure_takes_the_best_epoch(planted: Comparison) -> None:
    best = _row(planted.summary, sparsity=0.9, budget=4, arm="rigl", measure="best")
    final = _row(planted.summary, sparsity=0.9, budget=4, arm="rigl", measure="final")
    # seed 0 peaks one epoch before its last at final + 3 - 1
    assert best["mean"] == pytest.approx(final["mean"] + 2.0 / 5)


def test_paired_differences_planted_effect_and_null(planted: Comparison) -> None:
    final = planted.paired[planted.paired["measure"] == "final"]
    assert len(final) == 4
    planted_2 = _row(final, sparsity=0.95, budget=2)
    planted_4 = _row(final, sparsity=0.95, budget=4)
    null_2 = _row(final, sparsity=0.9, budget=2)
    assert planted_2["baseline"] == "rigl"
    assert planted_2["mean_diff"] == pytest.approx(statistics.mean(DIFFS[0.95]))
    assert planted_2["std_diff"] == pytest.approx(statistics.stdev(DIFFS[0.95]))
    assert planted_2["ci_low"] > 0.0
    assert null_2["ci_low"] < 0.0 < null_2["ci_high"]
    assert (planted_4["n_pairs"], planted_4["seeds"]) == (4, "0,1,2,3")
    assert planted_4["mean_diff"] == pytest.approx(statistics.mean(DIFFS[0.95][:4]))
    # exact Wilcoxon: 2/2^5 and 2/2^4; the nulls have p = 1. Holm over the 4 final pairs.
    assert planted_2["p_wilcoxon"] == pytest.approx(0.0625)
    assert planted_4["p_wilcoxon"] == pytest.approx(0.125)
    assert null_2["p_wilcoxon"] == pytest.approx(1.0)
    assert planted_2["p_holm"] == pytest.approx(0.25)
    assert planted_4["p_holm"] == pytest.approx(0.375)
    assert not final["significant"].any()


def test_budget_to_target_speedup_in_the_planted_sweep(planted: Comparison) -> None:
    # s=0.95: baseline mean at e=4 is 56.04; the arm's e=2 mean 57.28 already beats it.
    row = _row(planted.budget_to_target, sparsity=0.95, arm="rigl+sparseopt")
    assert row["target"] == pytest.approx(56.0 + statistics.mean(NOISE))
    assert (row["budget_to_target"], row["baseline_budget_to_target"]) == (2, 4)
    assert row["speedup"] == pytest.approx(2.0)
    row = _row(planted.budget_to_target, sparsity=0.9, arm="rigl+sparseopt")
    assert (row["budget_to_target"], row["speedup"]) == (4, pytest.approx(1.0))


def _paper_trials() -> list[Trial]:
    """RigL ResNet-20 CIFAR-100 means at s=0.97 (science.md §6), one seed per cell."""
    numbers = {
        "rigl": [52.53, 54.87, 56.50, 57.32],
        "rigl+sparseopt": [53.95, 57.01, 57.62, 58.35],
    }
    return [
        Trial(arm, 0.97, budget, 0, acc, epochs=3)
        for arm, accs in numbers.items()
        for budget, acc in zip((100, 200, 300, 500), accs, strict=True)
    ]


def test_budget_to_target_on_a_constructed_case() -> None:
    result = _compare(_paper_trials())
    row = _row(result.budget_to_target, arm="rigl+sparseopt")
    assert row["target"] == pytest.approx(57.32)
    assert row["target_from"] == "rigl @ 500"
    assert (row["budget_to_target"], row["baseline_budget_to_target"]) == (300, 500)
    assert row["speedup"] == pytest.approx(500 / 300)
    assert not result.partial


def test_unreached_target_is_reported_as_such() -> None:
    result = _compare(_paper_trials(), target=58.0)
    arm = _row(result.budget_to_target, arm="rigl+sparseopt")
    base = _row(result.budget_to_target, arm="rigl")
    assert arm["reached"] and arm["budget_to_target"] == 500
    assert not base["reached"] and pd.isna(base["budget_to_target"])
    assert math.isnan(arm["speedup"])


def test_lr_search_compares_each_arm_at_its_best_lr_on_val(lr_search: Comparison) -> None:
    selection = lr_search.selection
    plain = _row(selection, arm="set", budget=3)
    corrected = _row(selection, arm="set+sparseopt", budget=3)
    assert (plain["basis"], plain["lr_trial"], plain["lr"]) == ("best lr on val_acc1", 1, 0.05)
    assert plain["selection_score"] == pytest.approx(74.0)
    # lr_trial 1 has val 80 on two seeds but one diverged run, which counts as 0
    assert corrected["lr_trial"] == 0
    assert corrected["selection_score"] == pytest.approx(77.0)
    summary = lr_search.summary[lr_search.summary["measure"] == "final"]
    assert _row(summary, arm="set", budget=3)["mean"] == pytest.approx(59.0)
    assert _row(summary, arm="set+sparseopt", budget=3)["mean"] == pytest.approx(64.0)
    pair = _row(lr_search.paired, budget=3, measure="final")
    assert (pair["n_pairs"], pair["mean_diff"]) == (3, pytest.approx(5.0))
    assert pair["p_wilcoxon"] == pytest.approx(0.25)


def test_final_stage_runs_are_compared_when_present(lr_search: Comparison) -> None:
    assert _row(lr_search.selection, arm="set", budget=6)["basis"] == "final stage"
    summary = lr_search.summary[lr_search.summary["measure"] == "final"]
    assert _row(summary, arm="set", budget=6)["mean"] == pytest.approx(66.1)
    pair = _row(lr_search.paired, budget=6, measure="final")
    assert (pair["seeds"], pair["mean_diff"]) == ("10,11,12", pytest.approx(1.5))


def test_curves_average_the_compared_runs_per_epoch(planted: Comparison) -> None:
    curve = planted.curves[
        (planted.curves["sparsity"] == 0.95)
        & (planted.curves["budget"] == 2)
        & (planted.curves["arm"] == "rigl")
    ].sort_values("epoch")
    final = BASE[0.95][2] + statistics.mean(NOISE)
    assert curve["epoch"].tolist() == [1, 2]
    assert curve["mean"].tolist() == pytest.approx([final - 1.0, final])
    assert curve["n"].tolist() == [5, 5]
    runs = planted.run_curves
    cell = runs[(runs["sparsity"] == 0.95) & (runs["budget"] == 2) & (runs["arm"] == "rigl")]
    assert sorted(cell["seed"].unique()) == [0, 1, 2, 3, 4] and len(cell) == 10
    assert cell.groupby("epoch")["test_acc1"].mean().tolist() == pytest.approx(
        curve["mean"].tolist()
    )


def test_itop_and_sparsity_per_compared_run(planted: Comparison) -> None:
    itop = planted.itop
    assert len(itop) == len(planted.runs) == 5 * 8 - 1
    arm = itop[itop["arm"] == "rigl+sparseopt"]
    assert arm["final_itop_rate"].tolist() == pytest.approx([0.7] * len(arm))
    assert (itop["final_measured_sparsity"] == itop["sparsity"]).all()
