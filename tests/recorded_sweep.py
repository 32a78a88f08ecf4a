"""Record a finished sweep in MLflow without Ray: the sweep's own searcher hands out the trial
configs and its own tracking callback (`MlflowSweepCallback`) logs them, fed the hooks and
results Tune would feed it. Cheap (no training) and the same code path as a real sweep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from mlflow.tracking import MlflowClient

from contract.trial import TrialMeta
from sweeps.run.search import SweepSearcher
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import locate, write_text_atomic
from sweeps.tracking.callback import MlflowSweepCallback
from sweeps.tracking.runs import trial_run_name

EpochResults = Callable[[int, TrialMeta], list[dict[str, Any]]]
"""The results one trial reports: (trial number, its meta) -> one dict per reported epoch."""


@dataclass(frozen=True)
class RecordedSweep:
    """Where the sweep was logged, what each trial logged, and the trials as Tune holds them."""

    experiment_id: str
    val_acc1: dict[str, list[float]]  # trial run name -> val_acc1 at epochs 1..budget
    config_hashes: list[str]
    trials: list[SimpleNamespace]  # trial_id, config, status, last_result (as Tune's Trial)
    searcher: SweepSearcher
    callback: MlflowSweepCallback


def val_acc1_results(val_acc1: Callable[[int, int], float]) -> EpochResults:
    """Every epoch to the budget with `val_acc1(trial_number, epoch)` and a falling train loss."""

    def results(number: int, meta: TrialMeta) -> list[dict[str, Any]]:
        return [
            {"epoch": epoch, "val_acc1": val_acc1(number, epoch), "train_loss": 1 / epoch}
            for epoch in range(1, meta.budget + 1)
        ]

    return results


def record_sweep(
    spec: SweepSpec,
    val_acc1: Callable[[int, int], float] | None = None,
    results: EpochResults | None = None,
    extending: RecordedSweep | None = None,
    running: Callable[[TrialMeta], bool] | None = None,
) -> RecordedSweep:
    """Run every trial of `spec` through the callback, reporting `results` (or `val_acc1`);
    with `extending`, continue that sweep under `spec` (an extension of its spec) as a re-run
    of the same command would, with the same searcher and callback. Trials for which
    `running` is true report their results but never end: the sweep stops mid-way once the
    searcher has nothing else to hand out."""
    results = results or val_acc1_results(val_acc1 or (lambda number, epoch: 50.0))
    location = locate(spec)
    write_text_atomic(location.spec_file, spec.to_yaml())
    if extending is None:
        searcher = SweepSearcher(spec)
        callback = MlflowSweepCallback(
            tracking_uri=spec.tracking_uri,
            experiment_name=spec.name,
            search_metric=spec.search.metric,
            artifact_location=location.artifact_location,
            spec_file=location.spec_file,
            outbox_dir=location.outbox_dir,
        )
        trials: list[SimpleNamespace] = []
    else:
        searcher, callback, trials = extending.searcher, extending.callback, extending.trials
        searcher.extend(spec)
    callback.setup()
    first = len(trials)
    logged: dict[str, list[float]] = {}
    while (config := searcher.suggest(f"trial_{len(trials) + 1:05d}")) != SweepSearcher.FINISHED:
        if config is None and running is not None:
            break
        assert config is not None, "the searcher waits on a trial that never completes"
        number = len(trials) + 1
        trial = SimpleNamespace(
            trial_id=f"trial_{number:05d}", config=config, last_result={}, status="RUNNING"
        )
        trials.append(trial)
        callback.on_trial_start(0, trials, trial)
        meta = TrialMeta.of(config)
        reported = results(number, meta)
        for result in reported:
            trial.last_result = result
            callback.on_trial_result(0, trials, trial, result)
        logged[trial_run_name(meta)] = [result.get("val_acc1") for result in reported]
        if running is not None and running(meta):
            continue
        trial.status = "TERMINATED"
        callback.on_trial_complete(0, trials, trial)
        searcher.on_trial_complete(trial.trial_id, trial.last_result)
    callback.on_experiment_end(trials)
    hashes = [TrialMeta.of(trial.config).config_hash for trial in trials[first:]]
    experiment = MlflowClient(spec.tracking_uri).get_experiment_by_name(spec.name)
    return RecordedSweep(experiment.experiment_id, logged, hashes, trials, searcher, callback)
