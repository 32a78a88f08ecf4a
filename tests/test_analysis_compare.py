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
    views_trials,
)

from analysis.compare import Comparison, arm_contrasts, compare
from analysis.export import build_tables
from analysis.primary import declaration
from contract.arms import baseline_arm

T975 = {3: 3.182446305284263, 4: 2.7764451051977987}  # Student t quantile 0.975 by df (tables)


def _hand_t(values: list[float]) -> tuple[float, float]:
    """mean ± t_{0.975, n-1} · s / sqrt(n)."""
    half = T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return statistics.mean(values) - half, statistics.mean(values) + half


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


@pytest.fixture(scope="module")
def views() -> Comparison:
    return _compare(views_trials())


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
                assert (row["ci_low"], row["ci_high"]) == pytest.approx(_hand_t(values))
                assert row["ci_method"] == "t"
                # 5 seeds: too few for a bootstrap interval, and the table says why
                assert row["bca_method"] == "no bootstrap (n < 8: too few seeds to resample)"
                assert math.isnan(row["bca_low"]) and math.isnan(row["bca_high"])


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
    final = planted.paired[
        (planted.paired["measure"] == "final") & (planted.paired["view"] == "best lr")
    ]
    assert len(final) == 4
    planted_2 = _row(final, sparsity=0.95, budget=2)
    planted_4 = _row(final, sparsity=0.95, budget=4)
    null_2 = _row(final, sparsity=0.9, budget=2)
    assert (planted_2["contrast"], planted_2["reference"]) == ("baseline", "rigl")
    assert planted_2["mean_diff"] == pytest.approx(statistics.mean(DIFFS[0.95]))
    assert planted_2["std_diff"] == pytest.approx(statistics.stdev(DIFFS[0.95]))
    assert (planted_2["ci_low"], planted_2["ci_high"]) == pytest.approx(_hand_t(DIFFS[0.95]))
    assert (planted_4["ci_low"], planted_4["ci_high"]) == pytest.approx(_hand_t(DIFFS[0.95][:4]))
    assert planted_2["ci_method"] == "t"
    assert null_2["ci_low"] < 0.0 < null_2["ci_high"]
    assert (planted_4["n_pairs"], planted_4["seeds"]) == (4, "0,1,2,3")
    assert planted_4["mean_diff"] == pytest.approx(statistics.mean(DIFFS[0.95][:4]))
    # exact Wilcoxon: 2/2^5 and 2/2^4; the nulls have p = 1. rigl+sparseopt − rigl is the
    # default primary contrast: Holm over its 4 final comparisons of the view.
    assert planted_2["p_wilcoxon"] == pytest.approx(0.0625)
    assert planted_4["p_wilcoxon"] == pytest.approx(0.125)
    assert null_2["p_wilcoxon"] == pytest.approx(1.0)
    assert planted_2["p_holm"] == pytest.approx(0.25)
    assert planted_4["p_holm"] == pytest.approx(0.375)
    assert set(final["family"]) == {"primary"} and not final["significant"].any()
    best = planted.paired[planted.paired["measure"] == "best"]
    assert set(best["family"]) == {"exploratory"} and best["p_holm"].isna().all()


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
    pair = _row(lr_search.paired, budget=3, measure="final", view="best lr")
    assert (pair["n_pairs"], pair["mean_diff"]) == (3, pytest.approx(5.0))
    assert (pair["lr_arm"], pair["lr_reference"]) == (0.1, 0.05)
    assert pair["p_wilcoxon"] == pytest.approx(0.25)


def test_final_stage_runs_are_compared_when_present(lr_search: Comparison) -> None:
    final = _row(lr_search.selection, arm="set", budget=6)
    assert final["basis"] == "final stage"
    assert pd.isna(final["selection_seeds"])  # one lr trial: no choice was made
    searched = _row(lr_search.selection, arm="set+sparseopt", budget=3)
    assert searched["selection_seeds"] == 3
    summary = lr_search.summary[lr_search.summary["measure"] == "final"]
    assert _row(summary, arm="set", budget=6)["mean"] == pytest.approx(66.1)
    pair = _row(lr_search.paired, budget=6, measure="final", view="best lr")
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


def test_planted_single_lr_sweep_has_both_views_at_the_one_lr(planted: Comparison) -> None:
    final = planted.paired[planted.paired["measure"] == "final"]
    for sparsity in (0.9, 0.95):
        for budget in (2, 4):
            best = _row(final, sparsity=sparsity, budget=budget, view="best lr")
            common = _row(final, sparsity=sparsity, budget=budget, view="best common lr")
            assert (common["lr_arm"], common["lr_reference"]) == (0.1, 0.1)
            for name in ("seeds", "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "p_holm"):
                assert common[name] == pytest.approx(best[name]), name
    # the running seed of s=0.9 e=4 keeps its lr from being scored, not from being the one lr
    row = _row(planted.matched, sparsity=0.9, budget=4, measure="final")
    assert row["best_common"] and math.isnan(row["score_arm"])


def test_best_lr_view_pairs_each_arm_at_its_own_lr(views: Comparison) -> None:
    final = views.paired[(views.paired["measure"] == "final") & (views.paired["view"] == "best lr")]
    at_3 = _row(final, budget=3)
    assert (at_3["lr_arm"], at_3["lr_reference"]) == (0.3, 0.1)
    assert (at_3["seeds"], at_3["mean_diff"]) == ("10,11", pytest.approx(1.33))
    at_6 = _row(final, budget=6)
    assert (at_6["lr_arm"], at_6["lr_reference"]) == (0.3, 0.3)
    assert (at_6["seeds"], at_6["mean_diff"]) == ("10,11", pytest.approx(1.0))


def test_matched_view_pairs_both_arms_at_every_lr_both_ran(views: Comparison) -> None:
    matched = views.matched[views.matched["measure"] == "final"]
    assert sorted(zip(matched["budget"], matched["lr"], strict=True)) == [
        (3, 0.1),
        (3, 0.3),
        (6, 0.1),
        (6, 0.3),
    ]  # lr 1.0: only rigl+sparseopt ran it
    low = _row(matched, budget=3, lr=0.1)
    # only rigl ran 0.1 in the final stage, so the search seeds are paired
    assert (low["stage"], low["seeds"], low["mean_diff"]) == ("search", "0,1,2", 0.5)
    assert (low["score_arm"], low["score_reference"], low["common_score"]) == (71.0, 70.0, 70.5)
    high = _row(matched, budget=3, lr=0.3)
    assert (high["stage"], high["mean_diff"], high["common_score"]) == ("search", 3.0, 72.0)
    assert high["best_common"] and not low["best_common"]
    both_final = _row(matched, budget=6, lr=0.3)
    assert (both_final["stage"], both_final["seeds"]) == ("final", "10,11")
    assert both_final["mean_diff"] == pytest.approx(1.0)


def test_best_common_lr_view_is_the_matched_lr_with_the_best_mean_score(views: Comparison) -> None:
    final = views.paired[
        (views.paired["measure"] == "final") & (views.paired["view"] == "best common lr")
    ]
    at_3 = _row(final, budget=3)
    assert (at_3["lr_arm"], at_3["lr_reference"]) == (0.3, 0.3)
    assert (at_3["n_pairs"], at_3["mean_diff"]) == (3, pytest.approx(3.0))
    assert _row(final, budget=6)["seeds"] == "10,11"


def test_lr_position_among_the_lrs_each_cell_ran(views: Comparison) -> None:
    selection = views.selection
    rigl = _row(selection, arm="rigl", budget=3)
    assert (rigl["lrs_searched"], rigl["lr"], rigl["lr_position"]) == ("0.1,0.3", 0.1, "lowest")
    assert rigl["selection_seeds"] == 3  # the final stage's search lr trial ran seeds 0-2
    assert _row(selection, arm="rigl", budget=6)["lr_position"] == "highest"
    sparseopt = _row(selection, arm="rigl+sparseopt", budget=3)
    assert (sparseopt["lrs_searched"], sparseopt["lr_position"]) == ("0.1,0.3,1", "inside")


def test_arm_contrasts_follow_the_arm_grammar() -> None:
    assert arm_contrasts("rigl") == []
    assert arm_contrasts("rigl+sparseopt") == [("baseline", "rigl")]
    assert arm_contrasts("rigl+sparseopt+corrected") == [
        ("baseline", "rigl"),
        ("corrected", "rigl+sparseopt"),
    ]
    assert arm_contrasts("rigl+sparseopt+renorm") == [
        ("baseline", "rigl+renorm"),
        ("renorm", "rigl+sparseopt"),
    ]
    assert arm_contrasts("set+ham") == [("ham", "set")]
    assert arm_contrasts("rigl+bogus") == []


ABLATION_ARMS = {  # arm -> test accuracy offset over rigl
    "rigl": 0.0,
    "rigl+sparseopt": 1.0,
    "rigl+sparseopt+corrected": 0.5,
    "rigl+sparseopt+cap": 0.75,
    "rigl+renorm": -0.25,
    "rigl+sparseopt+renorm": 1.5,
    "set+ham": 0.0,  # its nearest arm, set, did not run: no contrast
}


def test_each_ablation_is_contrasted_with_its_nearest_arm_in_both_views() -> None:
    trials = [
        Trial(arm, 0.9, 2, seed, 60.0 + offset + seed)
        for arm, offset in ABLATION_ARMS.items()
        for seed in range(2)
    ]
    result = _compare(trials)
    expected = {
        ("baseline", "rigl+sparseopt", "rigl"): 1.0,
        ("baseline", "rigl+sparseopt+corrected", "rigl"): 0.5,
        ("corrected", "rigl+sparseopt+corrected", "rigl+sparseopt"): -0.5,
        ("baseline", "rigl+sparseopt+cap", "rigl"): 0.75,
        ("cap", "rigl+sparseopt+cap", "rigl+sparseopt"): -0.25,
        ("renorm", "rigl+renorm", "rigl"): -0.25,
        ("baseline", "rigl+sparseopt+renorm", "rigl+renorm"): 1.75,
        ("renorm", "rigl+sparseopt+renorm", "rigl+sparseopt"): 0.5,
    }
    contrasts = result.contrasts
    assert set(
        zip(contrasts["contrast"], contrasts["arm"], contrasts["reference"], strict=True)
    ) == set(expected)
    final = result.paired[result.paired["measure"] == "final"]
    for view in ("best lr", "best common lr", "best lr, cross-fitted"):
        rows = final[final["view"] == view]
        found = {
            (row.contrast, row.arm, row.reference): row.mean_diff
            for row in rows.itertuples(index=False)
        }
        assert found == pytest.approx(expected), view
    assert final.groupby("view").size().to_dict() == {
        "best common lr": 8,
        "best lr": 8,
        "best lr, cross-fitted": 8,
    }
    # the default primary family: each arm with a modifier against its base arm
    # (without SparseOpt and its options; for rigl+renorm, plain rigl); the rest exploratory
    primary = final[final["family"] == "primary"]
    assert sorted(set(zip(primary["arm"], primary["reference"], strict=True))) == [
        ("rigl+renorm", "rigl"),
        ("rigl+sparseopt", "rigl"),
        ("rigl+sparseopt+cap", "rigl"),
        ("rigl+sparseopt+corrected", "rigl"),
        ("rigl+sparseopt+renorm", "rigl+renorm"),
    ]
    exploratory = final[final["family"] == "exploratory"]
    assert len(exploratory) == 3 * 3 and exploratory["p_holm"].isna().all()


def test_activity_is_the_mean_over_epochs_per_compared_run() -> None:
    trials = [
        Trial("rigl+renorm", 0.9, 2, 0, 60.0, activity={"renorm": (0.0, 0.03)}),
        Trial("rigl+sparseopt+renorm", 0.9, 2, 0, 61.0, activity={"renorm": 0.5}),
        Trial("rigl+ham", 0.9, 2, 0, 61.0),
    ]
    activity = _compare(trials).activity
    assert _row(activity, arm="rigl+renorm")["mean_active_frac"] == pytest.approx(0.015)
    assert _row(activity, arm="rigl+renorm")["epochs"] == 2
    assert _row(activity, arm="rigl+sparseopt+renorm")["mean_active_frac"] == pytest.approx(0.5)
    ham = _row(activity, arm="rigl+ham")
    assert (ham["metric"], ham["epochs"]) == ("ham_active_frac", 0)
    assert math.isnan(ham["mean_active_frac"])


def test_budget_to_target_interval_needs_eight_seeds_per_budget(planted: Comparison) -> None:
    row = _row(planted.budget_to_target, sparsity=0.95, arm="rigl+sparseopt")
    assert (row["n_seeds"], row["ci_method"]) == (
        "5,4",
        "no bootstrap (n < 8: too few seeds to resample)",
    )
    assert math.isnan(row["speedup_ci_low"]) and math.isnan(row["reached_frac"])


def test_a_tie_goes_to_the_lr_nearest_the_log_middle_and_is_listed() -> None:
    # val ties between lrs 0.05 and 0.2 (equally far from the middle 0.1 of 0.05..0.2 on a
    # log scale) and 0.1 is worse: the smaller, 0.05, wins (not lr_trial 0, lr 0.2, which
    # "ties to the earliest lr trial" would have picked)
    trials = [
        Trial("rigl", 0.9, 2, seed, 60.0 + seed, val, lr_trial=lr_trial, lr=lr)
        for seed in range(3)
        for lr_trial, (lr, val) in enumerate(((0.2, 80.0), (0.1, 70.0), (0.05, 80.0)))
    ]
    row = _row(_compare(trials).selection, arm="rigl", budget=2)
    assert (row["lr"], row["lr_trial"], row["tied_lrs"]) == (0.05, 2, "0.05,0.2")
    assert row["selection_score"] == pytest.approx(80.0)


def test_the_best_common_lr_ranks_both_arms_seeds_together() -> None:
    # at 0.1 both arms score 70 and at 0.3 the arm 80, the reference 60: a tie (70 each),
    # broken towards the smaller of two lrs equally near the middle
    values = {("rigl", 0.1): 70.0, ("rigl", 0.3): 60.0}
    values |= {("rigl+sparseopt", 0.1): 70.0, ("rigl+sparseopt", 0.3): 80.0}
    trials = [
        Trial(arm, 0.9, 2, seed, 60.0 + seed, val, lr_trial=(0.1, 0.3).index(lr), lr=lr)
        for (arm, lr), val in values.items()
        for seed in range(3)
    ]
    matched = _compare(trials).matched
    matched = matched[matched["measure"] == "final"]
    best = _row(matched, best_common=True)
    assert (best["lr"], best["common_score"], best["tied_lrs"]) == (0.1, 70.0, "0.1,0.3")
    assert (best["score_arm"], best["score_reference"]) == (70.0, 70.0)


def test_a_declared_primary_contrast_outside_the_grammar_is_compared_and_corrected() -> None:
    trials = [
        Trial(arm, 0.9, 2, seed, 60.0 + offset + seed)
        for arm, offset in (("rigl", 0.0), ("rigl+ham", 1.0), ("rigl+sparseopt", 2.0))
        for seed in range(3)
    ]
    tables = build_tables(records_for(trials))
    declared = declaration(["rigl+sparseopt:rigl+ham"])
    result = compare(tables.trials.to_pandas(), tables.epochs.to_pandas(), primary=declared)
    final = result.paired[(result.paired["measure"] == "final")]
    row = _row(final, arm="rigl+sparseopt", reference="rigl+ham", view="best lr")
    assert (row["contrast"], row["family"], row["mean_diff"]) == ("declared", "primary", 1.0)
    others = final[final["reference"] != "rigl+ham"]
    assert set(others["family"]) == {"exploratory"}
    assert result.primary.contrasts == (("rigl+sparseopt", "rigl+ham"),)
