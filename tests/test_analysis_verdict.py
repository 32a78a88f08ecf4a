"""The primary verdict against hand computations: declaration, pooled estimate, cross-fitting."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
import scipy.stats
from analysis_fixtures import Trial, records_for

from analysis.compare import compare
from analysis.errors import BadInputError
from analysis.export import build_tables
from analysis.primary import (
    PrimaryDeclaration,
    base_arm,
    declaration,
    default_contrasts,
    from_json,
    parse_contrast,
)
from analysis.verdict import metric_key, pooled_estimate, primary_verdict

T975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantile 0.975 by df


# ---- the declaration ------------------------------------------------------------------------


def test_default_primary_contrasts_are_every_modified_arm_against_its_base_arm() -> None:
    assert base_arm("rigl+sparseopt+cap") == "rigl"
    assert base_arm("set+sparseopt+ham") == "set+ham"
    assert base_arm("rigl+ham") == "rigl"
    assert base_arm("rigl") is None and base_arm("dense+ham") is None
    arms = ["dense", "rigl", "rigl+sparseopt", "rigl+sparseopt+cap", "set+ham", "rigl+renorm"]
    assert default_contrasts(arms) == (
        ("rigl+renorm", "rigl"),
        ("rigl+sparseopt", "rigl"),
        ("rigl+sparseopt+cap", "rigl"),
    )  # set+ham: set did not run; dense is a reference only


def test_the_experiment_tag_round_trips_and_bad_values_name_the_field() -> None:
    text = '{"primary": ["rigl+sparseopt:rigl"], "alpha": 0.05, "target": null, "halfwidth": 1.0}'
    declared = from_json(text)
    assert declared == PrimaryDeclaration((("rigl+sparseopt", "rigl"),), 0.05, None, 1.0)
    assert from_json(declared.to_json()) == declared
    assert from_json(None) == PrimaryDeclaration()
    assert from_json('{"alpha": 0.01}').contrasts is None
    assert PrimaryDeclaration().resolve(["rigl", "rigl+sparseopt"]).contrasts == (
        ("rigl+sparseopt", "rigl"),
    )
    for bad, message in (
        ("not json", "not JSON"),
        ('{"primary": "rigl+sparseopt:rigl"}', "list of 'ARM:BASELINE'"),
        ('{"alpha": 2}', "analysis.alpha = 2.0"),
        ('{"halfwidth": 0}', "analysis.halfwidth"),
        ('{"target": 101}', "analysis.target"),
        ('{"primary": ["rigl"]}', "write it ARM:BASELINE"),
        ('{"primary": ["rigl+bogus:rigl"]}', "unknown modifier 'bogus'"),
        ('{"prime": []}', "keys primary, alpha, target, halfwidth"),
        ('{"alpha": "x"}', "could not convert"),
    ):
        with pytest.raises(BadInputError, match=message):
            from_json(bad)
    assert parse_contrast(" rigl+sparseopt:rigl ") == ("rigl+sparseopt", "rigl")
    with pytest.raises(BadInputError, match="itself"):
        declaration(["rigl:rigl"])


# ---- the pooled estimate --------------------------------------------------------------------

DIFFS = {  # cell (sparsity, budget) -> per-seed difference, seeds 0-3
    (0.9, 2): [1.0, 0.0, 2.0, 1.0],
    (0.9, 4): [0.5, 0.5, 1.5, -0.5],
    (0.95, 2): [3.0, 1.0, 1.0, 2.0],
}


def _pairs(diffs: dict[tuple[float, int], list[float]]) -> pd.DataFrame:
    rows = [
        {
            "workload": "default",
            "dataset": "digits",
            "model": "small_cnn",
            "method": "rigl",
            "sparsity": sparsity,
            "budget": budget,
            "contrast": "baseline",
            "arm": "rigl+sparseopt",
            "reference": "rigl",
            "seed": seed,
            "arm_value": 90.0 + diff,
            "reference_value": 90.0,
        }
        for (sparsity, budget), values in diffs.items()
        for seed, diff in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_with_the_same_seeds_in_every_cell_the_pooled_interval_is_the_per_seed_t_interval() -> None:
    # per seed: (1 + 0.5 + 3)/3 = 1.5, (0 + 0.5 + 1)/3 = 0.5, (2 + 1.5 + 1)/3 = 1.5,
    # (1 - 0.5 + 2)/3 = 0.8333; mean 1.0833, sd 0.5; half-width t3 · 0.5 / 2 (the numbers
    # of the per-seed t-interval this verdict used before cells could differ in seeds)
    pooled, reference = pooled_estimate(_pairs(DIFFS))
    per_seed = [1.5, 0.5, 1.5, 2.5 / 3]
    half = T975[3] * statistics.stdev(per_seed) / 2
    assert pooled.estimate == pytest.approx(13 / 12, rel=1e-12)
    assert (pooled.low, pooled.high) == pytest.approx((13 / 12 - half, 13 / 12 + half), rel=1e-12)
    assert pooled.df == pytest.approx(3.0, rel=1e-12)
    assert (pooled.method, pooled.pairs, pooled.seeds, pooled.cells, reference) == (
        "seed-clustered t (CR2, cell means)",
        12,
        4,
        3,
        90.0,
    )


def test_seeds_only_some_cells_have_reach_the_pooled_estimate() -> None:
    # an adaptive sweep gave cell (0.9, 4) seeds 4 and 5 as well: +2.5 and +2.5
    extra = {**DIFFS, (0.9, 4): [0.5, 0.5, 1.5, -0.5, 2.5, 2.5]}
    pooled, reference = pooled_estimate(_pairs(extra))
    # cell means: 1.0, 7/6, 1.75 -> estimate 47/36 (each cell weighs 1/3)
    assert pooled.estimate == pytest.approx(47 / 36, rel=1e-12)
    assert (pooled.pairs, pooled.seeds, pooled.cells, reference) == (14, 6, 3, 90.0)
    # CR2 score per seed: Σ over its cells of √(n/(n−1)) / (3 n) · (d − cell mean), with
    # cell (0.9, 2): n 4, mean 1, residuals 0, −1, 1, 0 (factor √(4/3) / 12);
    # cell (0.9, 4): n 6, mean 7/6, residuals −2/3, −2/3, 1/3, −5/3, 4/3, 4/3 (√(6/5) / 18);
    # cell (0.95, 2): n 4, mean 1.75, residuals 1.25, −0.75, −0.75, 0.25 (√(4/3) / 12)
    a, b = math.sqrt(4 / 3) / 12, math.sqrt(6 / 5) / 18
    scores = [
        a * 0 + b * (-2 / 3) + a * 1.25,
        a * -1 + b * (-2 / 3) + a * -0.75,
        a * 1 + b * (1 / 3) + a * -0.75,
        a * 0 + b * (-5 / 3) + a * 0.25,
        b * (4 / 3),
        b * (4 / 3),
    ]
    half = math.sqrt(sum(score**2 for score in scores))
    # K = Σ_cells Qᵀ(I − J/n)Q: a cell with seeds S adds its weight² · (I_S − J_S/n)
    k = [[0.0] * 6 for _ in range(6)]
    for weight, seeds in ((a, range(4)), (b, range(6)), (a, range(4))):
        for i in seeds:
            for j in seeds:
                k[i][j] += weight**2 * ((i == j) - 1 / len(seeds))
    trace = sum(k[i][i] for i in range(6))
    trace_square = sum(k[i][j] * k[j][i] for i in range(6) for j in range(6))
    df = trace**2 / trace_square
    quantile = scipy.stats.t.ppf(0.975, df)
    assert pooled.df == pytest.approx(df, rel=1e-12)
    assert 3 < pooled.df < 5  # between the seeds every cell has (4) less one and 6 less one
    assert (pooled.low, pooled.high) == pytest.approx(
        (47 / 36 - quantile * half, 47 / 36 + quantile * half), rel=1e-12
    )


def test_a_cell_with_one_pair_gives_no_pooled_interval() -> None:
    pooled, _ = pooled_estimate(_pairs({**DIFFS, (0.9, 4): [0.5]}))
    assert pooled.estimate == pytest.approx((1.0 + 0.5 + 1.75) / 3)
    assert math.isnan(pooled.low) and math.isnan(pooled.high) and math.isnan(pooled.df)
    assert (pooled.pairs, pooled.seeds, pooled.cells) == (9, 4, 3)


# ---- cross-fitting --------------------------------------------------------------------------

CROSS = {  # lr -> (val, test) per seed 0-2 of rigl+sparseopt
    0.1: ((80.0, 70.0, 70.0), (60.0, 50.0, 50.0)),
    0.3: ((72.0, 72.0, 72.0), (55.0, 55.0, 55.0)),
    1.0: ((50.0, 50.0, 50.0), (40.0, 40.0, 40.0)),
}


def _crossfit_trials() -> list[Trial]:
    trials = [Trial("rigl", 0.9, 2, seed, 52.0, 60.0, lr=0.3) for seed in range(3)]
    for lr_trial, (lr, (vals, tests)) in enumerate(CROSS.items()):
        trials += [
            Trial("rigl+sparseopt", 0.9, 2, seed, test, val, lr_trial=lr_trial, lr=lr)
            for seed, (val, test) in enumerate(zip(vals, tests, strict=True))
        ]
    return trials


def test_cross_fitting_chooses_each_seeds_lr_on_the_other_seeds() -> None:
    # in-sample: mean val 73.33 at 0.1 beats 72 at 0.3 -> test mean 53.33.
    # seed 0 held out: 0.1 scores 70 on seeds 1, 2 < 72 -> 0.3 (test 55);
    # seeds 1 and 2 held out: 0.1 scores 75 > 72 -> 0.1 (test 50): mean 51.67.
    tables = build_tables(records_for(_crossfit_trials()))
    result = compare(tables.trials.to_pandas(), tables.epochs.to_pandas())
    fitted = result.crossfit[result.crossfit["arm"] == "rigl+sparseopt"]
    assert list(zip(fitted["seed"], fitted["lr"], strict=True)) == [(0, 0.3), (1, 0.1), (2, 0.1)]
    (row,) = result.optimism.to_dict("records")  # rigl ran one lr: nothing was chosen
    assert row["arm"] == "rigl+sparseopt"
    assert (row["n"], row["cross_fitted_lrs"]) == (3, "0.1,0.3")
    assert row["in_sample_mean"] == pytest.approx(160 / 3)
    assert row["cross_fitted_mean"] == pytest.approx(155 / 3)
    assert row["optimism"] == pytest.approx(5 / 3)
    final = result.paired[result.paired["measure"] == "final"]
    views = dict(zip(final["view"], final["mean_diff"], strict=True))
    assert views["best lr"] == pytest.approx(160 / 3 - 52.0)
    assert views["best lr, cross-fitted"] == pytest.approx(155 / 3 - 52.0)


def test_the_verdict_pools_the_primary_contrast_and_says_what_it_means() -> None:
    tables = build_tables(records_for(_crossfit_trials()))
    result = compare(tables.trials.to_pandas(), tables.epochs.to_pandas())
    verdict = primary_verdict(result)
    rows = verdict.primary[verdict.primary["scope"] == "all"]
    assert list(rows["view"]) == ["best common lr", "best lr", "best lr, cross-fitted"]
    matched = rows.iloc[0]
    # matched at 0.3, the only lr both ran: 55 - 52 = +3 on every seed
    assert (matched["estimate"], matched["ci_low"], matched["ci_high"]) == (3.0, 3.0, 3.0)
    assert (matched["pairs"], matched["seeds"], matched["cells"]) == (3, 3, 1)
    assert matched["method"] == "seed-clustered t (CR2, cell means)"
    assert matched["relative_error_change"] == pytest.approx(-3.0 / 48.0)
    (sentence,) = verdict.sentences
    assert sentence.startswith(
        "rigl+sparseopt vs rigl: +3.00 points [+3.00, +3.00] (95% seed-clustered t-interval, "
        "matched lr, pooled over 1 cells: 3 pairs of 3 seeds; 6.2% fewer test errors than "
        "rigl) — rigl+sparseopt is "
        "more accurate than rigl: the interval excludes 0; 0 of 1 cells differ after Holm"
    )
    assert metric_key("rigl+sparseopt", "rigl", "best lr, cross-fitted", "estimate") == (
        "primary.rigl_sparseopt.vs.rigl.best_lr_cross-fitted"
    )
    assert metric_key("rigl+sparseopt", "rigl", "best common lr", "pairs") == (
        "answer.rigl_sparseopt.vs.rigl.matched_lr.pairs"
    )
