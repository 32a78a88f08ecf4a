"""analysis.guards: each verdict guard fires when it should and not otherwise."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from analysis_fixtures import Trial, clean_trials, records_for, views_trials

from analysis.compare import Comparison, compare
from analysis.export import build_tables
from analysis.guards import COLUMNS, find_guards, guard_tags
from analysis.primary import PrimaryDeclaration, declaration


def _comparison(trials: list[Trial], primary: PrimaryDeclaration | None = None) -> Comparison:
    tables = build_tables(records_for(trials))
    return compare(tables.trials.to_pandas(), tables.epochs.to_pandas(), primary=primary)


def _guards(trials: list[Trial]) -> pd.DataFrame:
    return find_guards(_comparison(trials))


def _fired(guards: pd.DataFrame, guard: str) -> list[tuple[str, str]]:
    rows = guards[guards["guard"] == guard]
    return list(zip(rows["scope"], rows["detail"], strict=True))


def test_a_clean_sweep_fires_no_guard() -> None:
    guards = _guards(clean_trials())
    assert list(guards.columns) == list(COLUMNS) == ["guard", "scope", "detail"]
    assert guards.empty
    tags = guard_tags(guards)
    assert tags["sparsesweep.guards"] == "none"
    assert tags["sparsesweep.guard.lr_at_edge"] == "0"


def test_lr_at_edge_fires_for_the_top_of_the_grid_and_a_one_value_grid() -> None:
    top = [trial for trial in clean_trials() if trial.lr != 0.2]  # 0.1 is now the highest
    assert _fired(_guards(top), "lr_at_edge") == [
        (
            "digits/small_cnn/rigl · rigl s=0.9 e=2",
            "chosen lr 0.1 is the highest of the 2 lrs run (0.05, 0.1)",
        ),
        (
            "digits/small_cnn/rigl · rigl+sparseopt s=0.9 e=2",
            "chosen lr 0.1 is the highest of the 2 lrs run (0.05, 0.1)",
        ),
    ]
    only = [trial for trial in clean_trials() if trial.lr == 0.1]
    details = [detail for _, detail in _fired(_guards(only), "lr_at_edge")]
    assert details == ["chosen lr 0.1 is the only lr run"] * 2


def test_few_selection_seeds_fires_for_an_lr_chosen_on_fewer_than_three_seeds() -> None:
    assert _fired(_guards(clean_trials(seeds=2)), "few_selection_seeds") == [
        (
            f"digits/small_cnn/rigl · {arm} s=0.9 e=2",
            "lr 0.1 chosen among 3 lr trials on the mean of 2 seed(s) (< 3)",
        )
        for arm in ("rigl", "rigl+sparseopt")
    ]
    assert _fired(_guards(clean_trials(seeds=3)), "few_selection_seeds") == []
    # a single lr is no choice; a final stage counts the seeds of its search lr trial
    only = [trial for trial in clean_trials(seeds=2) if trial.lr == 0.1]
    assert _fired(_guards(only), "few_selection_seeds") == []
    final = [
        dataclasses.replace(trial, stage="final", seed=trial.seed + 10)
        for trial in clean_trials(seeds=2)
        if trial.lr == 0.1
    ]
    details = [d for _, d in _fired(_guards(clean_trials(seeds=2) + final), "few_selection_seeds")]
    assert details == ["lr 0.1 chosen among 3 lr trials on the mean of 2 seed(s) (< 3)"] * 2


def test_lr_mismatch_fires_when_the_best_lrs_differ_and_names_the_matched_number() -> None:
    guards = _guards(views_trials())
    assert _fired(guards, "lr_mismatch") == [
        (
            "digits/small_cnn/rigl s=0.9 e=3 · rigl+sparseopt vs rigl (baseline)",
            "best lr: rigl+sparseopt at lr 0.3, rigl at lr 0.1: +1.33 pp (n=2); "
            "at the best common lr 0.3: +3.00 pp (n=3)",
        )
    ]  # at e=6 both arms chose 0.3
    assert _fired(_guards(clean_trials()), "lr_mismatch") == []


def _spread(trials: list[Trial], arm: str, swing: float) -> list[Trial]:
    """The arm's test accuracy ± `swing` by seed parity (its difference spreads)."""
    return [
        dataclasses.replace(t, final_test=t.final_test + (swing if t.seed % 2 else -swing))
        if t.arm == arm
        else t
        for t in trials
    ]


def test_few_seeds_says_how_many_seeds_the_spread_needs_for_the_half_width() -> None:
    # differences 1 ± 1.5: sd 1.5·sqrt(10/9) = 1.581; n=12: t11 = 2.2010 · 1.581 / sqrt(12)
    # = 1.005 > 1; n=13: t12 = 2.1788 · 1.581 / sqrt(13) = 0.956 <= 1
    spread = _spread(clean_trials(), "rigl+sparseopt", 1.5)
    assert _fired(_guards(spread), "few_seeds") == [
        (
            "digits/small_cnn/rigl s=0.9 e=2 · rigl+sparseopt vs rigl (baseline)",
            "paired seeds best lr: 10, best common lr: 10, best lr, cross-fitted: 10; the "
            "spread of best lr (sd of differences 1.58 pp) needs 13 seeds for a ±1-pp 95% "
            "t-interval",
        )
    ]
    assert _fired(_guards(clean_trials(seeds=3)), "few_seeds") == []  # no spread at all
    wider = find_guards(_comparison(spread, declaration(halfwidth=2.0)))
    assert _fired(wider, "few_seeds") == []  # t4 · 1.581 / sqrt(5) = 1.96: 5 seeds do for ±2
    single = _fired(_guards(clean_trials(seeds=1)), "few_seeds")  # one seed: no cross-fitting
    assert [detail for _, detail in single] == [
        "paired seeds best lr: 1, best common lr: 1; fewer than 2 paired seeds: no spread to judge"
    ]


def test_powerless_family_fires_when_holm_cannot_reject_at_the_seeds() -> None:
    # 1 comparison per view at 5 seeds: 2/2^5 = 0.0625 > 0.05; at 6 seeds 0.03125 <= 0.05
    fired = _fired(_guards(clean_trials(seeds=5)), "powerless_family")
    assert fired == [
        (
            f"primary family, {view} (rigl+sparseopt − rigl)",
            "1 comparisons of at most 5 paired seeds: the smallest exact Wilcoxon p is "
            "2/2^5 = 0.0625, × 1 = 0.0625 > α = 0.05, so Holm rejects none whatever the data "
            "(declare fewer contrasts or run more seeds)",
        )
        for view in ("best lr", "best common lr", "best lr, cross-fitted")
    ]
    assert _fired(_guards(clean_trials(seeds=6)), "powerless_family") == []
    strict = find_guards(_comparison(clean_trials(seeds=6), declaration(alpha=0.01)))
    assert len(_fired(strict, "powerless_family")) == 3
    nothing = find_guards(_comparison(clean_trials(), declaration(["set+sparseopt:set"])))
    assert _fired(nothing, "guard_not_evaluated") == [
        (
            "primary family",
            "powerless_family: no primary contrast has both arms in one cell (declared: "
            "set+sparseopt:set)",
        )
    ]


def test_lr_tie_names_the_cell_the_tied_lrs_and_the_one_chosen() -> None:
    # val 80 at 0.05 and 0.2 (equally near the log-middle 0.1), 70 at 0.1: the smaller wins
    tied = [dataclasses.replace(t, final_val=80.0 if t.lr != 0.1 else 70.0) for t in clean_trials()]
    fired = _fired(_guards(tied), "lr_tie")
    assert fired[:2] == [
        (
            f"digits/small_cnn/rigl · {arm} s=0.9 e=2",
            "lrs 0.05, 0.2 tie on mean val_acc1 80 (10 seeds); chose 0.05 (lrs run: 0.05, "
            "0.1, 0.2)",
        )
        for arm in ("rigl", "rigl+sparseopt")
    ]
    assert fired[2] == (
        "digits/small_cnn/rigl s=0.9 e=2 · rigl+sparseopt vs rigl (baseline)",
        "best common lr: lrs 0.05, 0.2 tie on both arms' mean val_acc1 80; chose 0.05: "
        "+1.00 pp (n=10)",
    )
    assert _fired(_guards(clean_trials()), "lr_tie") == []


def test_short_update_interval_fires_for_set_and_rigl_only() -> None:
    short = _guards(clean_trials(delta_t=10))
    assert _fired(short, "short_update_interval") == [
        (
            "digits/small_cnn/rigl · rigl, rigl+sparseopt",
            "ΔT = 10 steps < 20 steps per epoch (0.50 epoch) in 20 runs of 2 cells",
        )
    ]
    for_set = _guards(clean_trials(arms=("set", "set+sparseopt"), delta_t=10))
    assert len(_fired(for_set, "short_update_interval")) == 1
    static = _guards(clean_trials(arms=("static", "static+sparseopt"), delta_t=10))
    assert static.empty
    assert _guards(clean_trials(delta_t=20)).empty  # one epoch exactly is not shorter


def test_short_update_interval_without_steps_per_epoch_is_not_evaluated() -> None:
    guards = _guards(clean_trials(steps_per_epoch=None))
    assert _fired(guards, "short_update_interval") == []
    assert _fired(guards, "guard_not_evaluated") == [
        (
            "digits/small_cnn/rigl · rigl, rigl+sparseopt",
            "short_update_interval: 20 of 20 runs have no steps_per_epoch tag "
            "(steps_per_epoch is tagged once a trial reports)",
        )
    ]
    assert guard_tags(guards)["sparsesweep.guards"] == "guard_not_evaluated"


RENORM = ("rigl+renorm", "rigl+sparseopt+renorm")


@pytest.mark.parametrize(
    ("per_epoch", "fires"),
    [((0.0, 0.015), True), ((0.0, 0.03), False), (0.5, False)],
)
def test_inactive_ablation_averages_the_activity_over_epochs(
    per_epoch: float | tuple[float, ...], fires: bool
) -> None:
    guards = _guards(clean_trials(arms=RENORM, activity={"renorm": per_epoch}))
    fired = _fired(guards, "inactive_ablation")
    assert bool(fired) == fires
    if fires:
        assert fired == [
            (
                f"digits/small_cnn/rigl · {arm} s=0.9 e=2",
                "renorm changed 0.75% of steps (< 1%): renorm_active_frac averaged over each "
                "run's epochs, mean of 10 runs (range 0.75%–0.75%)",
            )
            for arm in RENORM
        ]
    assert _fired(guards, "guard_not_evaluated") == []


def test_inactive_ablation_without_its_activity_metric_is_not_evaluated() -> None:
    guards = _guards(clean_trials(arms=RENORM))
    assert _fired(guards, "inactive_ablation") == []
    assert [detail for _, detail in _fired(guards, "guard_not_evaluated")] == [
        "inactive_ablation: renorm_active_frac was not logged by its 10 runs"
    ] * 2


def test_guard_tags_list_the_fired_guards_and_count_every_guard() -> None:
    trials = [dataclasses.replace(trial, delta_t=10) for trial in views_trials()]
    guards = _guards(trials)
    tags = guard_tags(guards)
    assert tags["sparsesweep.guards"] == (
        "lr_at_edge,lr_mismatch,powerless_family,guard_not_evaluated"
    )
    assert {key: value for key, value in tags.items() if key != "sparsesweep.guards"} == {
        "sparsesweep.guard.lr_at_edge": "2",
        "sparsesweep.guard.lr_tie": "0",
        "sparsesweep.guard.few_selection_seeds": "0",
        "sparsesweep.guard.lr_mismatch": "1",
        "sparsesweep.guard.few_seeds": "0",
        "sparsesweep.guard.powerless_family": "3",
        "sparsesweep.guard.short_update_interval": "0",
        "sparsesweep.guard.inactive_ablation": "0",
        "sparsesweep.guard.guard_not_evaluated": "1",
    }
    assert guards["guard"].tolist() == [
        "lr_at_edge",
        "lr_at_edge",
        "lr_mismatch",
        *["powerless_family"] * 3,
        "guard_not_evaluated",
    ]


def test_lr_mismatch_of_arms_without_a_common_seed_says_so() -> None:
    # rigl+sparseopt's compared runs are its final seeds 10, 11; the renorm arm has seeds 0-2
    renorm = [
        Trial("rigl+sparseopt+renorm", 0.9, 3, seed, 61.0 + seed, lr=0.1) for seed in range(3)
    ]
    fired = dict(_fired(_guards(views_trials() + renorm), "lr_mismatch"))
    scope = "digits/small_cnn/rigl s=0.9 e=3 · rigl+sparseopt+renorm vs rigl+sparseopt (ablation: renorm)"
    assert fired[scope] == (
        "best lr: rigl+sparseopt+renorm at lr 0.1, rigl+sparseopt at lr 0.3: no seed in common; "
        "at the best common lr 0.1: +0.50 pp (n=3)"
    )
