"""MLflow tracking for a sweep: a parent run per cell, one child run per trial, exactly once.

Ray's stock `MLflowLoggerCallback` opens a new run for every resumed trial and logs at
`training_iteration`; this callback instead keys every run by the trial's config hash, so a
restored or retried trial re-attaches to its run, and logs each epoch once with
`step = epoch`. Epochs a trial replays from its checkpoint (the `history` it sends on its
first report after a restart) fill in anything the tracker missed while the driver was down.
If the tracking server is unreachable mid-sweep, pending epochs are buffered and retried on
the next event instead of failing the sweep.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ray.tune import Callback

from sweeps.store import read_text

logger = logging.getLogger(__name__)

EPOCH_METRICS: tuple[str, ...] = (
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "test_loss",
    "test_acc1",
    "test_acc5",
    "lr",
    "sparsity",
    "itop_rate",
    "epoch_time_s",
    "samples_per_s",
)
WITNESS_METRIC = "train_loss"
ROLE_TAG = "sparsesweep.role"
STATUS_TAG = "sparsesweep.status"
_BATCH_LIMIT = 900


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested dict to dotted keys with string values (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def trial_run_name(meta: dict[str, Any]) -> str:
    """Readable child-run name, e.g. `rigl+sparseopt s=0.95 e=100 seed=0 lr=0.08`."""
    text = f"{meta['arm']} s={meta['sparsity']:g} e={meta['budget']} seed={meta['seed']} lr={meta['lr']:.3g}"
    if meta.get("stage") == "final":
        text += " final"
    return text


def cell_run_name(meta: dict[str, Any]) -> str:
    """Readable parent-run name, e.g. `rigl+sparseopt s=0.95 e=100`."""
    prefix = "" if meta.get("workload") in (None, "default") else f"{meta['workload']} "
    return f"{prefix}{meta['arm']} s={meta['sparsity']:g} e={meta['budget']}"


def trial_tags(meta: dict[str, Any], train: dict[str, Any], git_commit: str) -> dict[str, str]:
    """Every factor of a trial as MLflow tags (see docs/conventions.md)."""
    sparse = train["sparse"]
    return {
        ROLE_TAG: "trial",
        STATUS_TAG: "running",
        "cell": meta["cell"],
        "workload": str(meta.get("workload", "default")),
        "arm": meta["arm"],
        "method": sparse["method"],
        "preconditioner": sparse["preconditioner"],
        "regrow_scores": sparse["regrow_scores"],
        "ham": str(sparse["ham"] is not None).lower(),
        "grad_renorm": str(sparse["grad_renorm"]).lower(),
        "dataset": train["data"]["name"],
        "model": train["model"]["name"],
        "sparsity": f"{meta['sparsity']:g}",
        "budget": str(meta["budget"]),
        "seed": str(meta["seed"]),
        "lr": f"{meta['lr']:.6g}",
        "weight_decay": f"{train['optim']['weight_decay']:.6g}",
        "stage": meta["stage"],
        "lr_trial": str(meta["lr_trial"]),
        "config_hash": meta["config_hash"],
        "git_commit": git_commit,
    }


def epoch_entries(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The per-epoch metric dicts a Tune result carries: replayed history, then itself."""
    yield from result.get("history") or ()
    if "epoch" in result:
        yield result


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowSweepCallback(Callback):
    """Tune callback that records a sweep in MLflow without duplicate runs or steps."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str | None = None,
        git_commit: str = "unknown",
        spec_file: str | None = None,
    ) -> None:
        self._tracking_uri = tracking_uri
        self._experiment_name = experiment_name
        self._artifact_location = artifact_location
        self._git_commit = git_commit
        self._spec_file = spec_file
        self._spec_text: str | None = None
        self._client: Any = None
        self._experiment_id: str | None = None
        self._trial_runs: dict[str, str] = {}
        self._cell_runs: dict[str, str] = {}
        self._logged_epochs: dict[str, set[int]] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        """A lazily created `MlflowClient` (not pickled with the callback)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    # ----------------------------------------------------------------- Tune hooks
    def setup(self, **info: Any) -> None:
        if self._spec_file:
            self._spec_text = read_text(self._spec_file)
        self.experiment_id()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded("start", trial, lambda: self._start(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._pending.setdefault(trial.trial_id, []).extend(
            {key: entry[key] for key in ("epoch", *EPOCH_METRICS) if key in entry}
            for entry in epoch_entries(result)
        )
        self._guarded("result", trial, lambda: self._flush(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded("complete", trial, lambda: self._finish(trial, errored=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded("error", trial, lambda: self._finish(trial, errored=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            if self._pending.get(trial.trial_id):
                self._guarded("final flush", trial, lambda trial=trial: self._flush(trial))
        unsent = sum(len(items) for items in self._pending.values())
        if unsent:
            logger.warning(
                "MLflow: %d epoch records could not be sent to %s; they are kept in the trials' "
                "checkpoints and are replayed when the sweep is resumed",
                unsent,
                self._tracking_uri,
            )
        for run_id in self._cell_runs.values():
            self._guarded(
                "end cell",
                None,
                lambda run_id=run_id: self.client.set_terminated(run_id, "FINISHED"),
            )

    def get_state(self) -> dict[str, Any]:
        return {"trial_runs": dict(self._trial_runs), "cell_runs": dict(self._cell_runs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._trial_runs = dict(state.get("trial_runs", {}))
        self._cell_runs = dict(state.get("cell_runs", {}))

    # ----------------------------------------------------------------- internals
    def experiment_id(self) -> str:
        """The sweep's experiment, created on first use with an explicit artifact location."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self._experiment_name)
            if found is None:
                self._experiment_id = self.client.create_experiment(
                    self._experiment_name,
                    artifact_location=self._artifact_location,
                    tags={"sparsesweep.sweep": self._experiment_name},
                )
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _guarded(self, what: str, trial: Any, action: Any) -> None:
        """Run an MLflow action; a tracking outage is logged, never fatal to the sweep."""
        try:
            action()
        except Exception as error:  # any tracking failure must not kill training
            name = getattr(trial, "trial_id", "-")
            logger.warning(
                "MLflow %s for trial %s failed (%s); will retry on the next event",
                what,
                name,
                error,
            )

    def _find_run(self, tags: dict[str, str]) -> str | None:
        clauses = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id()], filter_string=clauses, max_results=2)
        return runs[0].info.run_id if runs else None

    def _cell_run(self, meta: dict[str, Any]) -> str:
        cell = meta["cell"]
        run_id = self._cell_runs.get(cell) or self._find_run({ROLE_TAG: "cell", "cell": cell})
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id(),
                run_name=cell_run_name(meta),
                tags={
                    ROLE_TAG: "cell",
                    "cell": cell,
                    "arm": meta["arm"],
                    "sparsity": f"{meta['sparsity']:g}",
                    "budget": str(meta["budget"]),
                    "workload": str(meta.get("workload", "default")),
                },
            )
            run_id = run.info.run_id
            if self._spec_text:
                self.client.log_text(run_id, self._spec_text, "sweep_spec.yaml")
        self._cell_runs[cell] = run_id
        return run_id

    def _attach(self, trial: Any) -> str:
        """The trial's run id: remembered, found by config hash, or newly created."""
        run_id = self._trial_runs.get(trial.trial_id)
        if run_id is not None:
            return run_id
        meta, train = trial.config["meta"], trial.config["train"]
        run_id = self._find_run({ROLE_TAG: "trial", "config_hash": meta["config_hash"]})
        if run_id is None:
            tags = trial_tags(meta, train, self._git_commit)
            tags["mlflow.parentRunId"] = self._cell_run(meta)
            tags["ray_trial_id"] = trial.trial_id
            run = self.client.create_run(
                self.experiment_id(), run_name=trial_run_name(meta), tags=tags
            )
            run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(key, value[:6000]) for key, value in flatten(train).items()]
            for chunk in _chunks(params, 100):
                self.client.log_batch(run_id, params=chunk)
            self.client.log_dict(run_id, trial.config, "trial_config.json")
            self._logged_epochs[run_id] = set()
        self._trial_runs[trial.trial_id] = run_id
        return run_id

    def _start(self, trial: Any) -> None:
        """Attach the trial to its run and mark it (and its cell) running again."""
        run_id = self._attach(trial)
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, STATUS_TAG, "running")
        self.client.set_tag(run_id, "ray_trial_id", trial.trial_id)
        self.client.update_run(self._cell_run(trial.config["meta"]), status="RUNNING")

    def _logged(self, run_id: str) -> set[int]:
        if run_id not in self._logged_epochs:
            history = self.client.get_metric_history(run_id, WITNESS_METRIC)
            self._logged_epochs[run_id] = {int(point.step) for point in history}
        return self._logged_epochs[run_id]

    def _flush(self, trial: Any) -> None:
        """Send the trial's pending epochs that MLflow does not have yet, in batches."""
        pending = self._pending.get(trial.trial_id)
        if not pending:
            return
        from mlflow.entities import Metric

        run_id = self._attach(trial)
        logged = self._logged(run_id)
        now = int(time.time() * 1000)
        fresh: dict[int, dict[str, Any]] = {}
        for entry in pending:
            epoch = int(entry["epoch"])
            if epoch not in logged:
                fresh[epoch] = entry
        metrics = [
            Metric(key, float(entry[key]), now, epoch)
            for epoch, entry in sorted(fresh.items())
            for key in EPOCH_METRICS
            if key in entry
        ]
        for chunk in _chunks(metrics, _BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=chunk)
        logged.update(fresh)
        self._pending[trial.trial_id] = []

    def _finish(self, trial: Any, errored: bool) -> None:
        """End the trial's run as FINISHED, KILLED (stopped early) or FAILED (error/diverged)."""
        self._flush(trial)
        run_id = self._attach(trial)
        last = trial.last_result or {}
        budget = int(trial.config["meta"]["budget"])
        if errored:
            status, label = "FAILED", "failed"
        elif last.get("diverged"):
            status, label = "FAILED", "diverged"
        elif int(last.get("epoch", 0)) >= budget:
            status, label = "FINISHED", "finished"
        else:
            status, label = "KILLED", "stopped"
        self.client.set_tag(run_id, STATUS_TAG, label)
        if last.get("checkpoint_path"):
            self.client.set_tag(run_id, "checkpoint_path", str(last["checkpoint_path"]))
            self.client.log_text(run_id, str(last["checkpoint_path"]), "final_checkpoint_path.txt")
        self.client.set_terminated(run_id, status)
