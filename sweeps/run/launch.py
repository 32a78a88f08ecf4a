"""Start, restore and summarise a sweep on Ray Tune: one Tune experiment per shard of the
sweep (`sweeps.run.shards`; one shard unless the sweep expects more than
`resources.shard_trials` trials), run one after the other.

Layout under `spec.storage_path/spec.name/`: shard 0's Tune experiment (its state, trial index
and hand-out journal), `sweep_spec.yaml` (the spec the sweep runs under), `shards.json` (the
shard plan), `shard-<k>/` (shard k's Tune experiment), `train_runs/trial-<config hash>/` (each
trial's checkpoints), `optuna_studies.log` and, for a file-based MLflow store,
`mlflow_artifacts/`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from contract.outcome import ENDED, Status
from sweeps.run.shards import (
    Shard,
    ShardPlan,
    legacy_plan,
    plan_path,
    plan_shards,
    read_plan,
    shard_dir,
    shard_run_location,
    write_plan,
)
from sweeps.run.status import SweepSummary, experiment_entries, sweep_summary
from sweeps.run.tune_state import prune_old_states, tune_retries
from sweeps.run.versions import (
    VersionChangeError,
    check_resume_versions,
    installed_versions,
    version_tags,
)
from sweeps.spec.checks import check_data_roots
from sweeps.spec.diff import spec_changes_that_alter_existing, spec_diff_text
from sweeps.spec.load import StoredSweep, read_stored_sweep, stored_spec_text
from sweeps.spec.messages import SpecError
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import SweepLocation, is_remote, locate, write_text_atomic
from sweeps.tracking.outbox import outbox_status
from sweeps.tracking.uri import TrackingUriError, check_tracking_uri, drain_timeout_s

logger = logging.getLogger(__name__)

DRIVER_CPUS = 0.01
"""CPU reserved by each trial's driver: it only waits on its TorchTrainer, so the workers
get the cores (a whole CPU per driver would halve the trials a 2-core machine can run)."""
TRAIN_ENV_VARS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
"""Ray Train V2 settings for every trial (`ray/train/v2/_internal/constants.py`; a value already
set in this process's environment wins). Train polls a trial's workers every 2 s by default, and
each epoch's report and the end of training wait for the next poll; the preemption watcher is
one more actor process per trial that only flags node drains to `ray.train.get_preemption_info`,
which the trials do not use. Measured in `benchmarks/trial_overhead.py` (BENCHMARKS.md)."""
QUIET_LOGGERS: dict[str, int] = {"ray": logging.ERROR, "mlflow": logging.WARNING}
"""Log levels of the libraries' loggers in the driver unless `--verbose`: Ray's start-up and
token-authentication notes and MLflow's database set-up are not for the person running a
sweep. Ray's own log files (its session directory) are not affected."""


class SweepError(RuntimeError):
    """A sweep cannot start: bad storage, unreachable tracking, or an incompatible spec."""


def check_storage(location: SweepLocation) -> None:
    """A local storage path must be creatable and writable (checked with a probe file)."""
    if is_remote(location.experiment_dir):
        return
    directory = Path(location.experiment_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise SweepError(_storage_message(directory, error.strerror or str(error))) from None


def storage_problem(location: SweepLocation) -> str | None:
    """Why the sweep's local folder could not be created or written, found without writing
    anything (the dry run); None when it looks writable or is on object storage."""
    if is_remote(location.experiment_dir):
        return None
    directory = Path(location.experiment_dir)
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not existing.is_dir():
        return _storage_message(directory, f"{existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        return _storage_message(directory, f"{existing} is not writable")
    return None


def _storage_message(directory: Path, reason: str) -> str:
    return (
        f"storage_path: cannot write to {directory} ({reason}); "
        "choose a writable directory with --set storage_path=DIR"
    )


def stored_sweep(location: SweepLocation) -> StoredSweep | None:
    """The spec (and versions) an existing sweep runs under, if the sweep exists."""
    try:
        return read_stored_sweep(location.spec_file)
    except ValueError as error:
        raise SweepError(str(error)) from None


def check_resume_compatible(old: SweepSpec, new: SweepSpec, location: SweepLocation) -> None:
    """Refuse a spec that would change trials the sweep already ran; extensions are fine."""
    changes = spec_changes_that_alter_existing(old, new)
    if changes:
        listed = "\n".join(f"  - {change}" for change in changes)
        raise SweepError(
            f"the spec differs from the one sweep {new.name!r} runs under ({location.spec_file}) "
            f"in ways that change trials already run:\n{listed}\n\n{spec_diff_text(old, new)}\n"
            "Start a new sweep (--set name=...) or revert those changes; adding arms, "
            "sparsities, budgets, seeds or lr trials extends the sweep."
        )


def prepare(
    spec: SweepSpec, allow_version_change: bool = False
) -> tuple[SweepLocation, StoredSweep | None, list[str]]:
    """Every check that must pass before Ray starts; returns the location, the stored sweep
    (None for a new one) and warnings to show."""
    location = locate(spec)
    try:
        check_tracking_uri(spec.tracking_uri)
    except TrackingUriError as error:
        raise SweepError(str(error)) from None
    try:
        drain_timeout_s()
    except ValueError as error:
        raise SweepError(str(error)) from None
    held = outbox_status(location.outbox_dir)
    if held is not None and held.holder is not None:
        raise SweepError(
            f"sweep {spec.name} is in use: process {held.holder} (a run of it, or "
            "`sparsesweep sync`) holds its MLflow outbox; wait for it to end"
        )
    old = stored_sweep(location)
    warnings = _check_resume(old, spec, location, allow_version_change)
    check_storage(location)
    return location, old, warnings


def _check_resume(
    old: StoredSweep | None, spec: SweepSpec, location: SweepLocation, allow_version_change: bool
) -> list[str]:
    """An existing sweep may only be extended, and resumed under the ray/optuna it ran under."""
    if old is None:
        return []
    check_resume_compatible(old.spec, spec, location)
    try:
        return check_resume_versions(
            old.versions, installed_versions(), allow_version_change, spec.name
        )
    except VersionChangeError as error:
        raise SweepError(str(error)) from None


def dry_run_problems(spec: SweepSpec, allow_version_change: bool = False) -> list[str]:
    """What a real run would refuse before Ray starts, found without writing anything: the
    tracking store, storage, an existing sweep's spec and versions, and the data roots on
    this machine (a spec for a cluster may name roots that exist only there)."""
    location = locate(spec)
    problems = []
    try:
        check_tracking_uri(spec.tracking_uri)
    except TrackingUriError as error:
        problems.append(str(error))
    try:
        problems += _check_resume(stored_sweep(location), spec, location, allow_version_change)
    except SweepError as error:
        problems.append(str(error))
    storage = storage_problem(location)
    if storage is not None:
        problems.append(storage)
    try:
        check_data_roots(spec)
    except SpecError as error:
        problems.append(f"{error} (on this machine)")
    return problems


def _trainable(spec: SweepSpec, location: SweepLocation) -> Any:
    """The Tune trainable of the sweep's executor, with its resource request.

    `actor`: the trial trains in its Tune actor, which requests the worker's CPUs/GPUs.
    `train`: the actor is a driver waiting on a `TorchTrainer` (`DRIVER_CPUS`); the workers
    request the resources.
    """
    from ray import tune

    from trainables.runtime import TrialRuntime

    resources = spec.resources
    runtime = TrialRuntime(
        train_storage_path=location.train_runs_dir,
        workers=resources.workers_per_trial,
        cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
        max_failures=resources.max_failures,
    )
    if resources.trial_executor == "actor":
        from trainables.actor import train_in_actor

        request = runtime.resources_per_worker()
        return tune.with_resources(tune.with_parameters(train_in_actor, runtime=runtime), request)
    from trainables.driver import run_trial

    return tune.with_resources(
        tune.with_parameters(run_trial, runtime=runtime), {"CPU": DRIVER_CPUS}
    )


def _scheduler(spec: SweepSpec) -> Any:
    from sweeps.run.schedulers import CellASHAScheduler

    if spec.early_stopping is None:
        return None
    mode = "max" if spec.search.direction == "maximize" else "min"
    return CellASHAScheduler(
        metric=spec.search.metric,
        mode=mode,
        grace_period=spec.early_stopping.grace_period,
        reduction_factor=spec.early_stopping.reduction_factor,
    )


def _reuse_actors(spec: SweepSpec) -> bool:
    """One trial actor for many trials (no process start and imports per trial).

    Always on the actor executor: a trial stopped early is blocked in its synchronous report
    and ends at once. On the train executor only without early stopping: Tune would hand a
    stopped trial's actor to the next trial and fail that trial if the stopped one's
    TorchTrainer does not end within 2 s.
    """
    return spec.resources.trial_executor == "actor" or spec.early_stopping is None


def build_tuner(
    spec: SweepSpec, location: SweepLocation, shard: int, callbacks: list[Any], restore: bool
) -> Any:
    """A new Tuner for one shard of the sweep, or the restored one when its experiment exists."""
    from ray import tune

    from sweeps.run.handouts import handouts_path
    from sweeps.run.search import SweepSearcher, search_algorithm

    trainable = _trainable(spec, location)
    experiment_dir = shard_dir(location.experiment_dir, shard)
    if restore:
        return tune.Tuner.restore(
            experiment_dir,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    storage_path, name = shard_run_location(spec.storage_path, spec.name, shard)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search_algorithm(
                SweepSearcher(spec, spec_file=location.spec_file, shard=shard),
                spec.resources.max_concurrent_trials,
                handouts_path(experiment_dir),
            ),
            scheduler=_scheduler(spec),
            num_samples=-1,
            reuse_actors=_reuse_actors(spec),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=tune_retries(spec)),
            verbose=0,
        ),
    )


def _missing_directories(location: SweepLocation) -> list[Path]:
    """The local experiment folder and those of its parents that do not exist yet, deepest first."""
    if is_remote(location.experiment_dir):
        return []
    directory = Path(location.experiment_dir).absolute()
    return [path for path in (directory, *directory.parents) if not path.exists()]


def _remove_new_sweep(location: SweepLocation, created: list[Path]) -> None:
    """Undo a new sweep's first write (its spec file, shard plan and the folders made for it)."""
    if is_remote(location.spec_file):
        return
    Path(location.spec_file).unlink(missing_ok=True)
    Path(plan_path(location.experiment_dir)).unlink(missing_ok=True)
    for path in created:
        with contextlib.suppress(OSError):
            path.rmdir()  # only ever an empty folder


@contextlib.contextmanager
def _library_output(verbose: bool) -> Iterator[None]:
    """Unless `verbose`: the libraries' loggers at `QUIET_LOGGERS` levels, and what Tune prints
    on stdout (an experiment box with `Number of trials 9223372036854775807`, a TensorBoard
    hint for a folder the project never uses) dropped. Levels are restored afterwards."""
    if verbose:
        yield
        return
    import mlflow  # noqa: F401  (importing MLflow sets its logger's level: do it first)

    loggers = {name: logging.getLogger(name) for name in QUIET_LOGGERS}
    before = {name: found.level for name, found in loggers.items()}
    try:
        for name, found in loggers.items():
            found.setLevel(QUIET_LOGGERS[name])
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        for name, found in loggers.items():
            found.setLevel(before[name])


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`os.environ[name] = value` for the duration, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _tracker(spec: SweepSpec, location: SweepLocation) -> Any:
    """The sweep's MLflow tracker (a Tune callback; a restored sweep keeps its first one)."""
    from sweeps.tracking.callback import MlflowSweepCallback

    return MlflowSweepCallback(
        tracking_uri=spec.tracking_uri,
        experiment_name=spec.name,
        search_metric=spec.search.metric,
        artifact_location=location.artifact_location,
        spec_file=location.spec_file,
        outbox_dir=location.outbox_dir,
    )


def _tag_versions(spec: SweepSpec, location: SweepLocation, versions: dict[str, str]) -> None:
    """The library versions and the tracker's tags on the sweep's MLflow experiment (created
    here if new), set on every start where they changed. A failure is logged, not raised: the
    stored spec records the versions too, and the tracker tags the experiment itself."""
    from sweeps.tracking.experiment import experiment_tags, tag_experiment

    tags = {**version_tags(versions), **experiment_tags(spec, location.outbox_dir)}
    try:
        tag_experiment(spec.tracking_uri, spec.name, location.artifact_location, tags)
    except Exception as error:  # any MLflow error: the tags are a record, not a requirement
        logger.warning("could not tag the MLflow experiment with library versions: %s", error)


def _write_stored_spec(location: SweepLocation, spec: SweepSpec, versions: dict[str, str]) -> None:
    """Store the spec the sweep runs under, with the library versions it runs with."""
    try:
        write_text_atomic(location.spec_file, stored_spec_text(spec, versions))
    except OSError as error:
        raise SweepError(
            f"storage_path: cannot write {location.spec_file} ({error.strerror or error}); "
            "the sweep's stored files are unchanged"
        ) from None


NO_AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def _result_loggers() -> list[Any]:
    """Tune's JSON and CSV result files per trial (`result.json`, `progress.csv`), without its
    TensorBoard writer (an events file per trial nobody reads, and measurable driver time)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def shard_plan(spec: SweepSpec, location: SweepLocation, old: StoredSweep | None) -> ShardPlan:
    """The sweep's shard plan under `spec`: the stored one (or, for a sweep that ran before
    plans existed, one shard of the cells it ran) with the spec's new cells placed."""
    stored = read_plan(location.experiment_dir)
    if stored is None and old is not None:
        stored = legacy_plan([cell.cell_id for cell in old.spec.cells()])
    return plan_shards(spec, stored)


def _write_plan(location: SweepLocation, plan: ShardPlan) -> None:
    try:
        write_plan(location.experiment_dir, plan)
    except OSError as error:
        raise SweepError(
            f"storage_path: cannot write {plan_path(location.experiment_dir)} "
            f"({error.strerror or error}); the sweep's stored files are unchanged"
        ) from None


def _records_sent(location: SweepLocation) -> bool:
    """Whether MLflow holds every record of the sweep: its tracker's outbox is empty."""
    from sweeps.tracking.outbox import outbox_status

    status = outbox_status(location.outbox_dir)
    return status is None or status.pending == 0


def _run_shard(spec: SweepSpec, location: SweepLocation, plan: ShardPlan, shard: Shard) -> bool:
    """Run (or restore) one shard's Tune experiment to its end; False when it was interrupted
    (Ctrl-C: trials left running). A shard whose expected trials all ended, none failed, with
    every record sent is marked settled in the plan."""
    from ray import tune

    from sweeps.run.compact_state import CompactTrialState
    from sweeps.run.progress import RichProgressCallback

    experiment_dir = shard_dir(location.experiment_dir, shard.index)
    restore = tune.Tuner.can_restore(experiment_dir)
    callbacks = [
        _tracker(spec, location),
        RichProgressCallback(location.spec_file, shard.index),
        *_result_loggers(),
        CompactTrialState(spec.search.metric),
    ]
    tuner = build_tuner(spec, location, shard.index, callbacks, restore)
    # a restored sweep keeps the callbacks it was started with, which may predate the
    # explicit result loggers: Tune's defaults then add them back
    with _environment(NO_AUTO_LOGGERS_ENV, "0" if restore else "1"):
        tuner.fit()
    prune_old_states(experiment_dir)
    entries = experiment_entries(spec, experiment_dir)
    if any(entry.status in (Status.RUNNING, Status.PENDING) for entry in entries):
        return False  # interrupted: its trials in flight wait (pending) for the next start
    ended = sum(entry.status in ENDED for entry in entries)
    failed = any(entry.status is Status.FAILED for entry in entries)
    expected = shard.expected(spec)
    if ended >= expected and not failed and _records_sent(location):
        shard.settled = expected
        _write_plan(location, plan)
    return True


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    allow_version_change: bool = False,
    on_warning: Callable[[str], None] = logger.warning,
) -> SweepSummary:
    """Run (or resume) the sweep to completion and return its summary.

    Shards run in order; a settled one is skipped, and an interrupted one (Ctrl-C) ends the
    run. `progress`: the live display (or a line per ended trial when stderr is not a
    terminal); `verbose`: Ray's, Tune's and MLflow's own output too; `on_warning` receives
    what the checks before Ray starts want said (e.g. an allowed library version change).
    """
    from sweeps.run.display import PROGRESS_ENV, finish_progress, progress_mode, sweep_progress

    created = _missing_directories(locate(spec))  # before `prepare` makes the folder
    location, old, warnings = prepare(spec, allow_version_change)
    for warning in warnings:
        on_warning(warning)
    versions = installed_versions()
    plan = shard_plan(spec, location, old)
    _write_stored_spec(location, spec, versions)
    _write_plan(location, plan)
    to_run = [shard for shard in plan.shards if not shard.is_settled(spec)]
    env_vars = {key: os.environ.get(key, value) for key, value in TRAIN_ENV_VARS.items()}
    with _library_output(verbose):
        if not to_run:  # every shard settled: say where the sweep stands, start nothing
            _tag_versions(spec, location, versions)
            mode = progress_mode(progress, sys.stderr)
            sweep_progress(location.spec_file, spec, mode, shard=None).begin()
            finish_progress(location.spec_file)
            return sweep_summary(spec)
        if progress:  # Ray takes seconds to start: say so at once
            print(f"sweep {spec.name}: starting Ray…", file=sys.stderr, flush=True)
        import ray

        try:
            ray.init(
                address=address,
                ignore_reinit_error=True,
                log_to_driver=False,
                logging_level=logging.INFO if verbose else QUIET_LOGGERS["ray"],
                runtime_env={"env_vars": env_vars},
            )
        except BaseException:
            if old is None:  # e.g. no cluster at --address: a new sweep leaves nothing behind
                _remove_new_sweep(location, created)
            raise
        try:
            _tag_versions(spec, location, versions)
            with _environment(PROGRESS_ENV, progress_mode(progress, sys.stderr)):
                for shard in to_run:
                    if not _run_shard(spec, location, plan, shard):
                        break
            return sweep_summary(spec)
        finally:
            finish_progress(location.spec_file)
            ray.shutdown()
