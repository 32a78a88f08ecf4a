"""Adaptive seeds (`grid.seeds` as a mapping): the stopping rule, the searcher that applies it
(resume, extend), and the spec's errors."""

from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_search import Driver, ended

from analysis.seed_rule import AT_MAX, MORE, WITHIN, SeedRule, seed_decision
from sweeps.run.search import SweepSearcher
from sweeps.spec.load import parse_spec
from sweeps.spec.messages import SpecError
from sweeps.spec.schema import SweepSpec

RULE = SeedRule(initial=3, max=7, until_halfwidth=1.0, batch=2)
ARM, BASE = "default/rigl+sparseopt/s=0.9/e=1", "default/rigl/s=0.9/e=1"
ADAPTIVE: dict[str, Any] = {
    "name": "adaptive",
    "base": {
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0.5},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [1],
        "seeds": {"initial": 3, "max": 7, "until_halfwidth": 1.0, "batch": 2},
    },
    "search": {"lr": {"grid": [0.03, 0.1]}},
}


def adaptive_spec(**seeds: Any) -> SweepSpec:
    payload = copy.deepcopy(ADAPTIVE)
    payload["grid"]["seeds"].update(seeds)
    return parse_spec(payload)


# ---- the rule ------------------------------------------------------------------------------


def test_a_wide_interval_asks_for_a_batch_more() -> None:
    # differences 0, 2, 1: sd 1, t(0.975, 2) · 1 / √3 = 2.48 > 1
    decision = seed_decision([0.0, 2.0, 1.0], seeds=3, rule=RULE)
    assert (decision.add, decision.reason, decision.pairs) == (2, MORE, 3)
    assert decision.halfwidth == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_a_narrow_interval_stops_whatever_its_sign() -> None:
    for shift in (-5.0, 0.0, 5.0):
        decision = seed_decision([shift + 0.1, shift - 0.1, shift], seeds=3, rule=RULE)
        assert (decision.add, decision.reason) == (0, WITHIN)


def test_max_seeds_stops_a_wide_interval_and_the_last_batch_is_cut_to_max() -> None:
    wide = [0.0, 4.0, -4.0, 3.0, -3.0, 2.0, -2.0]
    assert (seed_decision(wide, seeds=7, rule=RULE).add, seed_decision(wide, 7, RULE).reason) == (
        0,
        AT_MAX,
    )
    assert seed_decision(wide[:6], seeds=6, rule=RULE).add == 1
    # fewer than two pairs give no interval: more seeds, never "within"
    assert seed_decision([1.0], seeds=3, rule=RULE).reason == MORE


# ---- the searcher --------------------------------------------------------------------------


def accuracy(diffs: list[float]) -> Any:
    """test_acc1 of a trial: rigl+sparseopt = rigl + diffs[seed]; val_acc1 best at lr 0.1."""

    def result(config: dict[str, Any]) -> dict[str, Any]:
        meta = config["meta"]
        base = 70.0 + meta["seed"]
        test = base + (diffs[meta["seed"]] if "sparseopt" in meta["arm"] else 0.0)
        val = test - 10.0 * abs(math.log10(meta["lr"] / 0.1))
        return ended(config, val_acc1=val, test_acc1=test)

    return result


def run(driver: Driver, result: Any) -> list[tuple[str, dict[str, Any]]]:
    """Hand out and complete trials until the searcher has nothing left."""
    everything = []
    while handed := driver.drain():
        everything += handed
        for trial_id, config in handed:
            driver.searcher.on_trial_complete(trial_id, result(config))
    return everything


def seeds_by(trials: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str, float], list[int]]:
    """(cell, stage, lr) -> seeds handed out, in order."""
    found: dict[tuple[str, str, float], list[int]] = {}
    for _, config in trials:
        meta = config["meta"]
        found.setdefault((meta["cell"], meta["stage"], meta["lr"]), []).append(meta["seed"])
    return found


WIDE = [0.0, 4.0, -4.0, 3.0, -3.0, 2.0, -2.0]
WIDE_THEN_NARROW = [0.0, 2.0, 1.0, 1.0, 1.0, 9.0, 9.0]


@pytest.mark.parametrize(
    ("diffs", "extra", "reason"),
    [([1.0] * 7, [], WITHIN), (WIDE_THEN_NARROW, [3, 4], WITHIN), (WIDE, [3, 4, 5, 6], AT_MAX)],
)
def test_the_searcher_adds_seeds_at_the_chosen_lr_until_the_rule_stops(
    diffs: list[float], extra: list[int], reason: str
) -> None:
    driver = Driver(SweepSearcher(adaptive_spec()))
    trials = run(driver, accuracy(diffs))
    assert driver.last == SweepSearcher.FINISHED
    expected = {}
    for cell in (ARM, BASE):
        expected[(cell, "search", 0.03)] = [0, 1, 2]
        expected[(cell, "search", 0.1)] = [0, 1, 2]
        if extra:
            expected[(cell, "extra", 0.1)] = extra
    assert seeds_by(trials) == expected
    (decision,) = driver.searcher.seed_decisions().values()
    assert (decision.seeds, decision.pairs, decision.reason) == (
        3 + len(extra),
        3 + len(extra),
        reason,
    )
    hashes = Counter(config["meta"]["config_hash"] for _, config in trials)
    assert max(hashes.values()) == 1


def test_cells_outside_a_primary_contrast_keep_the_initial_seeds() -> None:
    payload = copy.deepcopy(ADAPTIVE)
    payload["grid"]["arms"] = ["rigl", "rigl+sparseopt", "set"]
    driver = Driver(SweepSearcher(parse_spec(payload)))
    trials = run(driver, accuracy(WIDE))
    set_cell = "default/set/s=0.9/e=1"
    assert {k: v for k, v in seeds_by(trials).items() if k[0] == set_cell} == {
        (set_cell, "search", 0.03): [0, 1, 2],
        (set_cell, "search", 0.1): [0, 1, 2],
    }
    assert list(driver.searcher.seed_decisions()) == [(ARM, BASE)]


def test_resume_mid_batch_hands_out_no_seed_twice_and_loses_none(tmp_path: Path) -> None:
    result = accuracy(WIDE)
    whole = run(Driver(SweepSearcher(adaptive_spec())), result)

    driver = Driver(SweepSearcher(adaptive_spec()))
    before: list[tuple[str, dict[str, Any]]] = []
    while not any(config["meta"]["stage"] == "extra" for _, config in before):
        handed = driver.drain()
        before += handed
        extra = [t for t in handed if t[1]["meta"]["stage"] == "extra"]
        for trial_id, config in handed if not extra else extra[:1]:
            driver.searcher.on_trial_complete(trial_id, result(config))
    running = [t for t in before if t[1]["meta"]["stage"] == "extra"][1:]
    assert len(running) == 3  # the first batch (2 seeds × 2 cells), one of them ended
    path = tmp_path / "searcher.pkl"
    driver.searcher.save(str(path))

    restored = SweepSearcher(adaptive_spec())
    restored.restore(str(path))
    assert restored.running_trial_ids() == {trial_id for trial_id, _ in running}
    resumed = Driver(restored)
    resumed.count = driver.count
    for trial_id, config in running:
        restored.on_trial_complete(trial_id, result(config))
    after = run(resumed, result)
    assert resumed.last == SweepSearcher.FINISHED
    hashes = [config["meta"]["config_hash"] for _, config in before + after]
    assert len(hashes) == len(set(hashes))
    assert sorted(hashes) == sorted(config["meta"]["config_hash"] for _, config in whole)


def test_extend_with_a_larger_max_or_a_smaller_halfwidth_continues() -> None:
    driver = Driver(SweepSearcher(adaptive_spec(max=5)))
    first = run(driver, accuracy(WIDE))
    assert seeds_by(first)[(ARM, "extra", 0.1)] == [3, 4]
    driver.searcher.extend(adaptive_spec(max=7))
    more = run(driver, accuracy(WIDE))
    assert seeds_by(more) == {(ARM, "extra", 0.1): [5, 6], (BASE, "extra", 0.1): [5, 6]}
    assert driver.last == SweepSearcher.FINISHED

    narrow = Driver(SweepSearcher(adaptive_spec(until_halfwidth=3.0)))
    run(narrow, accuracy(WIDE_THEN_NARROW))  # ±2.48 at 3 seeds: within ±3
    assert [d.reason for d in narrow.searcher.seed_decisions().values()] == [WITHIN]
    narrow.searcher.extend(adaptive_spec(until_halfwidth=1.0))
    assert seeds_by(run(narrow, accuracy(WIDE_THEN_NARROW)))[(BASE, "extra", 0.1)] == [3, 4]


# ---- the spec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seeds", "needles"),
    [
        ({"initial": 1}, ["grid.seeds.initial", "an integer >= 2"]),
        ({"max": 2}, ["grid.seeds.max", "below initial", "an integer >= 3"]),
        ({"until_halfwidth": 0}, ["grid.seeds.until_halfwidth", "a number > 0"]),
        ({"batch": 0}, ["grid.seeds.batch", "an integer >= 1"]),
        ({"batch": True}, ["grid.seeds.batch", "boolean"]),
        ({"every": 3}, ["grid.seeds.every", "allowed keys: initial, max, until_halfwidth, batch"]),
    ],
)
def test_bad_seed_mappings_name_the_field_and_the_allowed_values(
    seeds: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(SpecError) as raised:
        adaptive_spec(**seeds)
    for needle in needles:
        assert needle in str(raised.value)


def test_the_spec_counts_trials_from_all_initial_to_all_max() -> None:
    spec = adaptive_spec()
    assert spec.grid.search_seeds() == [0, 1, 2]
    assert spec.trials_per_cell_range() == (6, 10)
    assert spec.expected_trials_range() == (12, 20)
    assert adaptive_spec(until_halfwidth=2).grid.adaptive.batch == 2  # type: ignore[union-attr]


def test_status_and_the_dry_run_show_seeds_planned_and_why_each_pair_stopped(
    tmp_path: Path,
) -> None:
    from sweeps.run.display import SweepProgress
    from sweeps.run.status import seed_lines, sweep_status
    from sweeps.spec.cost import estimate_cost
    from sweeps.spec.storage import locate

    payload = copy.deepcopy(ADAPTIVE)
    payload["storage_path"] = str(tmp_path / "results")
    spec = parse_spec(payload)
    assert seed_lines(spec)[1:] == [f"  {ARM} vs rigl: not judged yet (lr search running)"]
    driver = Driver(SweepSearcher(spec, spec_file=locate(spec).spec_file))
    run(driver, accuracy(WIDE_THEN_NARROW))
    # differences 0, 2, 1, 1, 1: sd 0.707, t(0.975, 4) · 0.707 / √5 = 0.878
    assert seed_lines(spec) == [
        "seeds: 3 per lr trial, then +2 at the chosen lrs of a primary pair while its interval "
        "is wider than ±1, up to 7",
        f"  {ARM} vs rigl: 5 seeds, 5 pairs, stopped: ±0.878 within ±1",
    ]
    assert estimate_cost(spec).total_trials == 12
    assert [row.expected for row in sweep_status(spec)] == [6, 6]
    assert SweepProgress(spec, "lines")._total_text() == "12-20"
    assert estimate_cost(spec, at_max=True).total_trials == 20
    assert seed_lines(parse_spec({**payload, "grid": {**payload["grid"], "seeds": [0, 1]}})) == []


# ---- the report ----------------------------------------------------------------------------


def test_the_report_ranks_lrs_on_the_search_seeds_and_counts_the_extra_ones() -> None:
    """Seeds 0-2 at lrs 0.1 and 0.3, seeds 3-4 added at 0.1 (stage extra) and worse on
    val_acc1: the lr is still chosen on seeds 0-2, and compared on all five."""
    from analysis_fixtures import Trial, records_for

    from analysis.compare import compare
    from analysis.export import build_tables
    from analysis.seed_rule import seed_table

    diffs = [0.0, 4.0, -4.0, 3.0, -3.0]
    trials = []
    for arm in ("rigl", "rigl+sparseopt"):
        for lr_trial, lr in enumerate((0.1, 0.3)):
            seeds = range(5) if lr == 0.1 else range(3)
            for seed in seeds:
                test = 80.0 + seed + (diffs[seed] if arm != "rigl" else 0.0)
                val = (90.0 if lr == 0.1 else 85.0) - (20.0 if seed >= 3 else 0.0)
                stage = "extra" if seed >= 3 else "search"
                trials.append(
                    Trial(
                        arm,
                        0.9,
                        2,
                        seed,
                        test,
                        final_val=val,
                        stage=stage,
                        lr=lr,
                        lr_trial=lr_trial,
                    )
                )
    tables = build_tables(records_for(trials))
    comparison = compare(tables.trials.to_pandas(), tables.epochs.to_pandas(), metric="val_acc1")
    selection = comparison.selection
    assert selection["lr"].tolist() == [0.1, 0.1]
    assert selection["selection_seeds"].tolist() == [3, 3]
    assert selection["selection_score"].tolist() == [90.0, 90.0]
    assert selection["runs"].tolist() == [5, 5]
    (row,) = seed_table(comparison, RULE).to_dict("records")
    assert (row["seeds_arm"], row["seeds_reference"], row["pairs"]) == (5, 5, 5)
    assert row["stop"] == MORE  # ±5.1 > ±1 with 5 of max 7 seeds: the sweep stopped first
    sd = float(pd.Series(diffs).std())
    assert row["halfwidth"] == pytest.approx(2.776445 * sd / math.sqrt(5), rel=1e-6)
    (fixed,) = seed_table(comparison, None).to_dict("records")
    assert fixed["stop"] == "fixed"


def _mid_cell_trials(seeds: int) -> list[Any]:
    """rigl and rigl+sparseopt at lrs 0.1 and 0.3, seeds 0..seeds-1 ended at both."""
    from analysis_fixtures import Trial

    return [
        Trial(arm, 0.9, 2, seed, 80.0, final_val=90.0 if lr == 0.1 else 85.0, lr=lr, lr_trial=i)
        for arm in ("rigl", "rigl+sparseopt")
        for i, lr in enumerate((0.1, 0.3))
        for seed in range(seeds)
    ]


def test_the_report_ranks_no_lr_trial_before_the_seeds_the_spec_expects_have_ended() -> None:
    """The spec gives every lr trial 3 seeds; MLflow holds seeds 0-1 of each (seed 2 not
    started): no lr is ranked, as `status` would say, until seed 2 has ended too."""
    from analysis_fixtures import records_for

    from analysis.compare import NOT_RANKED, compare
    from analysis.export import build_tables

    def comparison(seeds: int, search_seeds: int | None) -> Any:
        tables = build_tables(records_for(_mid_cell_trials(seeds)))
        frames = (tables.trials.to_pandas(), tables.epochs.to_pandas())
        return compare(*frames, metric="val_acc1", search_seeds=search_seeds)

    mid = comparison(2, 3)
    assert mid.selection["basis"].tolist() == [NOT_RANKED, NOT_RANKED]
    assert mid.selection["runs"].tolist() == [0, 0]
    assert not mid.matched["best_common"].any()
    assert mid.paired.empty
    ended = comparison(3, 3)
    assert ended.selection["lr"].tolist() == [0.1, 0.1]
    assert ended.selection["selection_seeds"].tolist() == [3, 3]
    assert ended.matched[ended.matched["best_common"]]["lr"].unique().tolist() == [0.1]
    # a sweep recorded without the tag: the seeds its runs ran (2) are all it expects
    assert comparison(2, None).selection["lr"].tolist() == [0.1, 0.1]


def test_the_tracker_records_the_search_seeds_and_the_export_reads_them(tmp_path: Path) -> None:
    import json

    from analysis.export import search_seeds
    from contract.names import Tag
    from sweeps.tracking.experiment import experiment_tags

    outbox = str(tmp_path / "outbox")
    adaptive = experiment_tags(adaptive_spec(), outbox)
    fixed = experiment_tags(
        parse_spec({**ADAPTIVE, "grid": {**ADAPTIVE["grid"], "seeds": [4, 7]}}), outbox
    )
    assert (adaptive[Tag.SEARCH_SEEDS], fixed[Tag.SEARCH_SEEDS]) == ("3", "2")
    assert (search_seeds(adaptive), search_seeds(fixed)) == (3, 2)
    older = {Tag.SEEDS: json.dumps({"initial": 4, "max": 9, "until_halfwidth": 1.0})}
    assert (search_seeds(older), search_seeds({})) == (4, None)


def test_the_report_of_a_store_takes_the_seeds_expected_from_the_experiment(
    tmp_path: Path,
) -> None:
    from analysis_fixtures import build_store
    from mlflow.tracking import MlflowClient

    from analysis.compare import NOT_RANKED
    from analysis.export import export_experiment
    from analysis.report import report_from_export
    from contract.names import Tag

    uri, _ = build_store(tmp_path, "mid", _mid_cell_trials(2))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mid")
    client.set_experiment_tag(experiment.experiment_id, Tag.SEARCH_METRIC, "val_acc1")
    client.set_experiment_tag(experiment.experiment_id, Tag.SEARCH_SEEDS, "3")
    exported = export_experiment(uri, "mid", tmp_path / "data")
    assert exported.manifest["search_seeds"] == 3
    result = report_from_export(tmp_path / "data", tmp_path / "report")
    assert result.comparison.selection["basis"].tolist() == [NOT_RANKED, NOT_RANKED]
