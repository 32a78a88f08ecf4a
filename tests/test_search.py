"""SweepSearcher: per-cell Optuna studies, seed groups, stages, dedup, save/restore, extension."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import optuna
import pytest
from ray.tune.search import Searcher

from sparseopt.config import TrainConfig
from sweeps.run.search import SweepSearcher, cell_seed_offset, search_algorithm
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec

TINY: dict[str, Any] = {
    "name": "tiny",
    "base": {
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0.5},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9, 0.95],
        "budgets": [1, 2],
        "seeds": [0, 1],
    },
    "search": {"lr": {"low": 0.01, "high": 0.5, "log": True}, "trials_per_cell": 2},
}


def make_spec(**sections: Any) -> SweepSpec:
    """TINY with top-level sections replaced/merged (`grid={"seeds": [...]}` merges)."""
    payload = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(payload.get(key), dict):
            payload[key].update(value)
        else:
            payload[key] = value
    return parse_spec(payload)


def score(config: dict[str, Any]) -> float:
    """A deterministic metric: best at lr = 0.1, shifted by seed and sparsity."""
    meta = config["meta"]
    return 90.0 - 10.0 * abs(math.log10(meta["lr"] / 0.1)) + meta["seed"] - 5.0 * meta["sparsity"]


class Driver:
    """Plays Tune: numbered trial ids, and completions in any order."""

    def __init__(self, searcher: SweepSearcher) -> None:
        self.searcher = searcher
        self.count = 0
        self.configs: dict[str, dict[str, Any]] = {}

    def suggest(self) -> tuple[str, Any]:
        trial_id = f"trial_{self.count:05d}"
        self.count += 1
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self.configs[trial_id] = config
        return trial_id, config

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Suggest until None/FINISHED; return what was handed out."""
        handed = []
        while True:
            trial_id, config = self.suggest()
            if not isinstance(config, dict):
                self.last = config
                return handed
            handed.append((trial_id, config))

    def complete(self, trials: list[tuple[str, dict[str, Any]]], value: Any = score) -> None:
        for trial_id, config in trials:
            self.searcher.on_trial_complete(trial_id, ended(config, val_acc1=value(config)))

    def run_to_end(self, value: Any = score) -> list[tuple[str, dict[str, Any]]]:
        everything = []
        while True:
            handed = self.drain()
            if not handed:
                return everything
            everything += handed
            self.complete(handed, value)


def ended(config: dict[str, Any], **metrics: Any) -> dict[str, Any]:
    """The last result of a trial that reached its budget."""
    return {"epoch": config["meta"]["budget"], **metrics}


def studies(searcher: SweepSearcher) -> dict[str, list[tuple[Any, ...]]]:
    """Every cell's Optuna trials as (number, state, value, params): the searcher's knowledge."""
    return {
        cell.cell_id: [
            (t.number, t.state, t.value, t.params) for t in searcher.study(cell.cell_id).trials
        ]
        for cell in searcher.spec.cells()
    }


def test_suggest_sequence_then_finished() -> None:
    spec = make_spec()
    driver = Driver(SweepSearcher(spec))
    handed = driver.drain()
    assert len(handed) == 32 == spec.expected_trials()
    assert driver.last is None  # trials still running: more may come
    first_round = [config["meta"]["cell"] for _, config in handed[:8]]
    assert sorted(first_round) == sorted(cell.cell_id for cell in spec.cells())  # round-robin
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for _, config in handed:
        meta = config["meta"]
        assert meta["stage"] == "search"
        groups[(meta["cell"], meta["lr_trial"])].append(meta["seed"])
    assert sorted(groups.values()) == [[0, 1]] * 16  # 8 cells x 2 lr trials, each on both seeds
    driver.complete(handed)
    assert driver.suggest()[1] == Searcher.FINISHED


def test_config_payload_matches_meta() -> None:
    spec = make_spec()
    handed = Driver(SweepSearcher(spec)).drain()
    hashes = set()
    for _, config in handed:
        train, meta = TrainConfig.model_validate(config["train"]), config["meta"]
        assert train.config_hash() == meta["config_hash"]
        assert meta["sweep"] == "tiny" and meta["workload"] == "default"
        assert (train.optim.lr, train.seed, train.epochs) == (
            meta["lr"],
            meta["seed"],
            meta["budget"],
        )
        assert train.sparse.sparsity == meta["sparsity"]
        assert train.sparse.method == meta["method"] == "rigl"
        expected = "sparseopt" if meta["arm"] == "rigl+sparseopt" else "none"
        assert train.sparse.preconditioner == expected
        assert meta["weight_decay"] == train.optim.weight_decay == 5e-4
        assert 0.01 <= meta["lr"] <= 0.5
        assert meta["cell"] == (f"default/{meta['arm']}/s={meta['sparsity']}/e={meta['budget']}")
        hashes.add(meta["config_hash"])
    assert len(hashes) == len(handed)  # no config handed out twice


def test_each_study_holds_its_cell_with_mean_values() -> None:
    spec = make_spec()
    searcher = SweepSearcher(spec)
    driver = Driver(searcher)
    handed = driver.run_to_end()
    by_group: dict[tuple[str, int], list[float]] = defaultdict(list)
    lrs: dict[tuple[str, int], float] = {}
    for _, config in handed:
        meta = config["meta"]
        by_group[(meta["cell"], meta["lr_trial"])].append(score(config))
        lrs[(meta["cell"], meta["lr_trial"])] = meta["lr"]
    for cell in spec.cells():
        study = searcher.study(cell.cell_id)
        assert study.study_name == cell.cell_id
        assert [t.number for t in study.trials] == [0, 1]
        for trial in study.trials:
            key = (cell.cell_id, trial.number)
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.params["lr"] == lrs[key]
            assert trial.value == pytest.approx(sum(by_group[key]) / 2)
    lr_sets = [
        frozenset(t.params["lr"] for t in searcher.study(c.cell_id).trials) for c in spec.cells()
    ]
    assert len(set(lr_sets)) == len(lr_sets)  # per-cell sampler seeds differ
    assert cell_seed_offset("a") == cell_seed_offset("a") != cell_seed_offset("b")


def test_failed_seeds_are_left_out_and_all_failed_is_fail() -> None:
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1], "seeds": [0, 1, 2]}
    )
    searcher = SweepSearcher(spec)
    driver = Driver(searcher)
    handed = driver.drain()
    cell = spec.cells()[0].cell_id
    group0 = [(tid, c) for tid, c in handed if c["meta"]["lr_trial"] == 0]
    group1 = [(tid, c) for tid, c in handed if c["meta"]["lr_trial"] == 1]
    searcher.on_trial_complete(group0[0][0], {"val_acc1": 50.0, "epoch": 1})
    searcher.on_trial_result(group0[1][0], {"val_acc1": 40.0, "epoch": 1})
    searcher.on_trial_complete(group0[1][0], {"epoch": 1})  # no metric: its last reported value
    searcher.on_trial_complete(group0[2][0], error=True)
    for tid, _ in group1[:2]:
        searcher.on_trial_complete(tid, error=True)
    searcher.on_trial_complete(group1[2][0], {"val_acc1": float("nan"), "epoch": 1})
    trials = searcher.study(cell).trials
    assert trials[0].value == pytest.approx(45.0)
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert searcher.study(cell).best_trial.params["lr"] == group0[0][1]["meta"]["lr"]
    assert driver.suggest()[1] == Searcher.FINISHED


@pytest.mark.parametrize(("metric", "worst"), [("val_acc1", 0.0), ("val_loss", math.inf)])
def test_a_diverged_seed_scores_the_worst_value_not_its_last_finite_one(metric, worst) -> None:
    """As the analysis counts it (0 % accuracy): an lr that blows up must not rank as a good one."""
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0, 1]},
        search={"lr": {"grid": [0.1, 1.0]}, "trials_per_cell": None, "metric": metric},
        second_stage={"seeds": [7]},
    )
    searcher = SweepSearcher(spec, metric=metric)
    driver = Driver(searcher)
    handed = driver.drain()
    cell = spec.cells()[0].cell_id
    good = 50.0 if metric == "val_acc1" else 1.0
    best_last = 99.0 if metric == "val_acc1" else 0.01  # the diverging lr's epoch-1 value
    for trial_id, config in handed:
        if config["meta"]["lr"] == 1.0:
            searcher.on_trial_result(trial_id, {metric: best_last, "epoch": 1})
            searcher.on_trial_complete(trial_id, {metric: math.nan, "epoch": 2, "diverged": True})
        else:
            searcher.on_trial_complete(trial_id, {metric: good, "epoch": 2, "diverged": False})
    values = {t.params["lr"]: t.value for t in searcher.study(cell).trials}
    assert values == {0.1: good, 1.0: worst}
    second = driver.drain()
    assert [(c["meta"]["lr"], c["meta"]["seed"]) for _, c in second] == [(0.1, 7)]


def test_every_lr_diverged_still_picks_one_for_the_second_stage() -> None:
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0]},
        search={"lr": {"grid": [0.1, 1.0]}, "trials_per_cell": None, "metric": "val_loss"},
        second_stage={"seeds": [7]},
    )
    searcher = SweepSearcher(spec, metric="val_loss")
    driver = Driver(searcher)
    for trial_id, _ in driver.drain():
        searcher.on_trial_complete(trial_id, {"val_loss": math.nan, "epoch": 1, "diverged": True})
    assert [(c["meta"]["lr"], c["meta"]["seed"]) for _, c in driver.drain()] == [(0.1, 7)]


def test_grid_sampler_covers_the_grid_exactly() -> None:
    spec = make_spec(
        search={
            "lr": {"grid": [0.03, 0.1, 0.3]},
            "weight_decay": {"grid": [0.0, 1e-4]},
            "trials_per_cell": None,
        }
    )
    assert spec.search.n_trials == 6
    searcher = SweepSearcher(spec)
    handed = Driver(searcher).run_to_end()
    assert len(handed) == 8 * 6 * 2
    points: dict[str, Counter] = defaultdict(Counter)
    for _, config in handed:
        meta = config["meta"]
        points[meta["cell"]][(meta["lr"], meta["weight_decay"])] += 1
    expected = Counter({(lr, wd): 2 for lr in (0.03, 0.1, 0.3) for wd in (0.0, 1e-4)})
    assert all(counter == expected for counter in points.values())
    assert isinstance(searcher.study(spec.cells()[0].cell_id).sampler, optuna.samplers.GridSampler)


def _play(searcher: SweepSearcher, steps: int, start: int = 0) -> list[dict[str, Any]]:
    """Alternate suggest/complete deterministically: complete every second handed-out trial."""
    seen = []
    open_ids: list[str] = []
    for index in range(start, start + steps):
        trial_id = f"t{index:04d}"
        config = searcher.suggest(trial_id)
        seen.append(config)
        if isinstance(config, dict):
            open_ids.append(trial_id)
            if index % 2:
                done = open_ids.pop(0)
                searcher.on_trial_complete(
                    done, {"val_acc1": float(len(done) + index % 7), "epoch": 1}
                )
    return seen


def test_save_restore_continues_identically(tmp_path: Path) -> None:
    spec = make_spec(second_stage={"seeds": [9]})
    original = SweepSearcher(spec)
    _play(original, 20)
    path = tmp_path / "searcher.pkl"
    original.save(str(path))
    expected = _play(original, 30, start=20)
    restored = SweepSearcher(spec)
    restored.restore(str(path))
    assert _play(restored, 30, start=20) == expected
    assert studies(restored) == studies(original)


def test_tune_checkpoint_dir_roundtrip(tmp_path: Path) -> None:
    spec = make_spec()
    searcher = SweepSearcher(spec)
    Driver(searcher).drain()
    searcher.save_to_dir(str(tmp_path), session_str="s1")
    assert [p.name for p in tmp_path.iterdir()] == ["searcher-state-s1.pkl"]
    fresh = SweepSearcher(spec)
    fresh.restore_from_dir(str(tmp_path))
    assert studies(fresh) == studies(searcher)
    assert fresh.suggest("next") is None  # everything handed out, all still running


def test_restore_completes_trials_that_ended_after_the_searchers_last_save(
    tmp_path: Path,
) -> None:
    """A driver killed between Tune's experiment state and the searcher's save: the trials
    the experiment records as TERMINATED are completed on restore (the limiter frees their
    slots and the study is told), the ones still running stay live."""
    spec = make_spec(search={"lr": {"grid": [0.1]}, "trials_per_cell": None})
    generator = search_algorithm(SweepSearcher(spec), max_concurrent_trials=2)
    driver = Driver(generator.searcher)  # the limiter: hands out two, then waits
    handed = [driver.suggest(), driver.suggest()]
    assert driver.suggest()[1] is None
    generator.save_to_dir(str(tmp_path), session_str="s1")
    (done_id, done_config), (running_id, _) = handed
    state = {
        "trial_data": [
            [
                json.dumps({"trial_id": done_id, "status": "TERMINATED"}),
                json.dumps({"last_result": ended(done_config, val_acc1=80.0)}),
            ],
            [
                json.dumps({"trial_id": running_id, "status": "RUNNING"}),
                json.dumps({"last_result": {}}),
            ],
        ]
    }
    (tmp_path / "experiment_state-s1.json").write_text(json.dumps(state))

    restored = search_algorithm(SweepSearcher(spec), max_concurrent_trials=2)
    restored.restore_from_dir(str(tmp_path))
    assert restored.running_trial_ids() == {running_id}
    assert isinstance(restored.searcher.suggest("next"), dict)  # the freed slot is used
    sweep_searcher = restored.searcher.searcher
    cell_id = done_config["meta"]["cell"]
    assert sweep_searcher._outcomes[done_id] == ("finished", 80.0, None)
    assert sweep_searcher.study(cell_id).trials[0].state == optuna.trial.TrialState.RUNNING


def test_second_stage_reruns_the_best_lr_on_fresh_seeds() -> None:
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]},
        search={"lr": {"grid": [0.01, 0.1, 0.5]}, "trials_per_cell": None},
        second_stage={"seeds": [100, 101]},
    )
    searcher = SweepSearcher(spec)
    driver = Driver(searcher)
    search = driver.drain()
    assert len(search) == 6 and driver.last is None
    driver.complete(search[:-1])
    assert driver.suggest()[1] is None  # the last search seed still runs
    driver.complete(search[-1:])
    final = driver.drain()
    assert [c["meta"]["seed"] for _, c in final] == [100, 101]
    lr_trial = {c["meta"]["lr"]: c["meta"]["lr_trial"] for _, c in search}
    for _, config in final:
        assert config["meta"]["stage"] == "final"
        assert config["meta"]["lr"] == 0.1
        assert config["meta"]["lr_trial"] == lr_trial[0.1]
    driver.complete(final)
    assert driver.suggest()[1] == Searcher.FINISHED


def test_minimised_metric_picks_the_lowest() -> None:
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1], "seeds": [0]},
        search={"lr": {"grid": [0.01, 0.1]}, "trials_per_cell": None, "metric": "val_loss"},
        second_stage={"seeds": [5]},
    )
    searcher = SweepSearcher(spec)
    assert searcher.mode == "min" and searcher.metric == "val_loss"
    driver = Driver(searcher)
    for trial_id, config in driver.drain():
        searcher.on_trial_complete(trial_id, ended(config, val_loss=config["meta"]["lr"]))
    ((_, final),) = driver.drain()
    assert final["meta"]["lr"] == 0.01


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_dedup_shares_a_repeated_config() -> None:
    spec = make_spec(grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]})
    searcher = SweepSearcher(spec)
    cell = spec.cells()[0].cell_id
    study = searcher.study(cell)
    study.sampler = optuna.samplers.PartialFixedSampler({"lr": 0.2}, study.sampler)
    driver = Driver(searcher)
    handed = driver.drain()
    assert len(handed) == 2  # the second lr trial repeats the first: nothing new to run
    assert driver.last is None
    driver.complete(handed)
    assert driver.suggest()[1] == Searcher.FINISHED
    values = [trial.value for trial in study.trials]
    expected = sum(score(c) for _, c in handed) / 2
    assert values == [pytest.approx(expected)] * 2


def test_extend_with_new_seeds_budgets_and_trials(tmp_path: Path) -> None:
    old = make_spec()
    searcher = SweepSearcher(old)
    driver = Driver(searcher)
    first = driver.run_to_end()
    assert len(first) == 32
    path = tmp_path / "state.pkl"
    searcher.save(str(path))
    new = make_spec(grid={"budgets": [1, 2, 3], "seeds": [0, 1, 2]}, search={"trials_per_cell": 3})
    resumed = SweepSearcher(new)
    resumed.restore(str(path))  # adopts the newer spec: it only extends the old one
    assert resumed.spec.grid.seeds == [0, 1, 2]
    second = Driver(resumed)
    second.count = driver.count
    added = second.run_to_end()
    assert len(first) + len(added) == new.expected_trials() == 12 * 3 * 3
    seeds_by_group: dict[tuple[str, int], set[int]] = defaultdict(set)
    for _, config in first + added:
        meta = config["meta"]
        seeds_by_group[(meta["cell"], meta["lr_trial"])].add(meta["seed"])
    assert len(seeds_by_group) == 12 * 3
    assert all(seeds == {0, 1, 2} for seeds in seeds_by_group.values())
    hashes = [c["meta"]["config_hash"] for _, c in first + added]
    assert len(set(hashes)) == len(hashes)
    for cell in old.cells():  # old studies continued: 3 trials each, values told once
        assert len(resumed.study(cell.cell_id).trials) == 3


def test_extend_adds_second_stage_seeds() -> None:
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]}, second_stage={"seeds": [7]}
    )
    searcher = SweepSearcher(spec)
    handed = Driver(searcher).run_to_end()
    assert [c["meta"]["seed"] for _, c in handed if c["meta"]["stage"] == "final"] == [7]
    searcher.extend(
        make_spec(
            grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]},
            second_stage={"seeds": [7, 8]},
        )
    )
    driver = Driver(searcher)
    driver.count = 1000
    ((_, extra),) = driver.drain()
    assert extra["meta"]["stage"] == "final" and extra["meta"]["seed"] == 8


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"grid": {"seeds": [0]}}, "grid.seeds: removed [1]"),
        ({"search": {"lr": {"low": 0.001, "high": 0.5, "log": True}}}, "search.lr"),
        (
            {
                "base": {
                    "data": {"name": "digits", "batch_size": 32},
                    "model": {"name": "mlp"},
                    "schedule": {"warmup_epochs": 0.5},
                }
            },
            "data.batch_size",
        ),
    ],
)
def test_extend_refuses_changes_to_existing_trials(
    changes: dict[str, Any], fragment: str, tmp_path: Path
) -> None:
    searcher = SweepSearcher(make_spec())
    Driver(searcher).drain()
    before = studies(searcher)
    with pytest.raises(ValueError, match="changes trials already run") as caught:
        searcher.extend(make_spec(**changes))
    assert fragment in str(caught.value)
    assert studies(searcher) == before
    path = tmp_path / "s.pkl"
    searcher.save(str(path))
    with pytest.raises(ValueError, match="changes trials already run"):
        SweepSearcher(make_spec(**changes)).restore(str(path))


def test_metric_mode_must_agree_with_the_spec() -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match=r"search\.metric"):
        SweepSearcher(spec, metric="val_loss")
    with pytest.raises(ValueError, match="mode"):
        SweepSearcher(spec, mode="min")
    searcher = SweepSearcher(spec, metric="val_acc1", mode="max")
    assert searcher.set_search_properties("val_acc1", "max", {}) is True
    assert searcher.set_search_properties(None, None, {}) is True
    with pytest.raises(ValueError, match="disagree"):
        searcher.set_search_properties("val_loss", "min", {})


def test_unknown_trial_completion_is_ignored() -> None:
    searcher = SweepSearcher(make_spec())
    Driver(searcher).drain()
    before = studies(searcher)
    searcher.on_trial_complete("never-suggested", {"val_acc1": 1.0, "epoch": 1})
    assert studies(searcher) == before


@pytest.mark.slow
@pytest.mark.ray
def test_tune_runs_interrupts_and_restores_the_searcher(local_ray, tmp_path: Path) -> None:
    from ray import tune

    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1, 2]},
        second_stage={"seeds": [9]},
    )
    resumed_flag = tmp_path / "resumed"
    driver_pid = os.getpid()

    def trainable(config: dict[str, Any]) -> None:  # self-contained: pickled by value for Ray
        meta = config["meta"]
        tune.report({"val_acc1": 100 * meta["lr"] + meta["seed"], "epoch": 1})
        if meta["lr_trial"] == 1 and not resumed_flag.exists():
            os.kill(driver_pid, signal.SIGINT)  # Ctrl-C: Tune checkpoints and returns early

    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=SweepSearcher(spec), num_samples=-1, metric="val_acc1", mode="max"
        ),
        run_config=tune.RunConfig(name="tiny", storage_path=str(tmp_path), verbose=0),
    )
    partial = tuner.fit()
    resumed_flag.touch()
    restored = tune.Tuner.restore(
        str(tmp_path / "tiny"), trainable, resume_unfinished=True, resume_errored=True
    )
    results = restored.fit()
    assert 0 < len(partial) < spec.expected_trials()
    assert len(results) == spec.expected_trials() == 2 * 2 * 2 + 2
    hashes = [result.config["meta"]["config_hash"] for result in results]
    assert len(set(hashes)) == len(hashes)
    stages = Counter(result.config["meta"]["stage"] for result in results)
    assert stages == {"search": 8, "final": 2}
    for result in results:
        meta = result.config["meta"]
        assert result.metrics["val_acc1"] == 100 * meta["lr"] + meta["seed"]
    for budget in (1, 2):  # the final stage re-ran the higher of each cell's two lrs
        configs = [r.config["meta"] for r in results if r.config["meta"]["budget"] == budget]
        finals = [meta["lr"] for meta in configs if meta["stage"] == "final"]
        assert finals == [max(meta["lr"] for meta in configs)]
    assert list((tmp_path / "tiny").glob("searcher-state-*.pkl"))


def test_told_trials_are_mirrored_to_an_optuna_journal_once(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.run.study_journal import JOURNAL_FILE, mirror_trial

    spec = make_spec(grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]})
    spec_file = tmp_path / "sweep_spec.yaml"
    searcher = SweepSearcher(spec, spec_file=str(spec_file))
    Driver(searcher).run_to_end()
    cell = spec.cells()[0].cell_id
    storage = JournalStorage(JournalFileBackend(str(tmp_path / JOURNAL_FILE)))
    mirrored = optuna.load_study(study_name=cell, storage=storage)
    ours = searcher.study(cell)
    assert [(t.params, t.value) for t in mirrored.trials] == [
        (t.params, t.value) for t in ours.trials
    ]
    mirror_trial(str(tmp_path / JOURNAL_FILE), ours, 0)  # a second mirror of a trial adds nothing
    assert len(optuna.load_study(study_name=cell, storage=storage).trials) == len(ours.trials)


def _trainable(config: dict[str, Any]) -> None:
    """Never run: the generator only needs a registered trainable to create Tune trials."""


def generator_for(spec: SweepSpec, tmp_path: Path, journal: bool) -> Any:
    """The sweep's search generator as `launch` builds it (4 trials at a time), ready to make
    Tune trials for an experiment under `tmp_path`."""
    from ray.tune.experiment import Experiment

    handouts = str(tmp_path / "handouts.jsonl") if journal else None
    generator = search_algorithm(SweepSearcher(spec), 4, handouts)
    experiment = Experiment("g", _trainable, num_samples=10**6, storage_path=str(tmp_path))
    generator.add_configurations(experiment)
    return generator


@pytest.mark.parametrize(("journal", "handed_out_twice"), [(True, 0), (False, 2)])
def test_configs_handed_out_after_the_last_snapshot_keep_their_trial_ids(
    tmp_path: Path, journal: bool, handed_out_twice: int
) -> None:
    """A driver killed between two of Tune's snapshots: the restored searcher hands out again
    what it handed out since the snapshot, and with the hand-out journal each such config gets
    its first trial id back, so no config is ever two Tune trials (without it: two are)."""
    spec = make_spec(
        grid={"arms": ["rigl"], "sparsities": [0.9], "budgets": [1]},
        search={"lr": {"grid": [0.01, 0.1, 0.3]}, "trials_per_cell": None},
    )
    first = generator_for(spec, tmp_path, journal)
    before = [first.next_trial() for _ in range(3)]
    first.on_trial_complete(before[0].trial_id, ended(before[0].config, val_acc1=50.0))
    first.save_to_dir(str(tmp_path), session_str="s1")  # Tune's snapshot
    after = [first.next_trial() for _ in range(2)]  # then the driver dies

    restored = generator_for(spec, tmp_path, journal)
    restored.restore_from_dir(str(tmp_path))
    again = []
    while (made := restored.next_trial()) is not None:
        again.append(made)
        restored.on_trial_complete(made.trial_id, ended(made.config, val_acc1=60.0))
    for trial in before[1:]:
        restored.on_trial_complete(trial.trial_id, ended(trial.config, val_acc1=60.0))
    while (made := restored.next_trial()) is not None:
        again.append(made)
        restored.on_trial_complete(made.trial_id, ended(made.config, val_acc1=60.0))
    assert restored.is_finished()

    ids: dict[str, set[str]] = defaultdict(set)
    for trial in [*before, *after, *again]:
        ids[trial.config["meta"]["config_hash"]].add(trial.trial_id)
    assert len(ids) == spec.expected_trials() == 6
    assert sum(len(found) - 1 for found in ids.values()) == handed_out_twice
    assert [t.config["meta"]["config_hash"] for t in again[:2]] == [
        t.config["meta"]["config_hash"] for t in after
    ]
    assert restored.running_trial_ids() == set()
    lr = before[0].config["meta"]["lr"]  # Tune keeps a short tag and three params per trial
    assert before[0].experiment_tag == f"1_default/rigl/s=0.9/e=1,seed=0,lr={lr:.4g}"
    assert before[0].evaluated_params == {"cell": "default/rigl/s=0.9/e=1", "seed": 0, "lr": lr}


def test_a_version_1_state_whose_outcomes_are_scores_restores_the_same_ranking() -> None:
    spec = make_spec(search={"lr": {"grid": [0.1, 1.0]}, "trials_per_cell": None})
    searcher = SweepSearcher(spec)
    driver = Driver(searcher)
    handed = driver.drain()
    driver.complete(handed[:-1])  # one seed still running
    state = searcher.get_state()
    scores = {"finished": lambda value: value, "failed": lambda value: None}
    old = {
        **state,
        "version": 1,
        "outcomes": {tid: scores[o.status](o.value) for tid, o in state["outcomes"].items()},
    }
    del old["decisions"]
    restored = SweepSearcher(spec)
    restored.set_state(copy.deepcopy(old))
    for cell in spec.cells():
        assert restored.ranking(cell.cell_id) == searcher.ranking(cell.cell_id)
