"""The records Tune's hooks leave in the outbox for MLflow, and how a batch of them collapses
into one update per trial.

A trial record names its trial by config hash (its identity: the MLflow run key and the
checkpoint key), never by Tune's trial id, which a restored sweep may hand out afresh. Times
are milliseconds since the epoch, taken when the hook ran; they become the metrics'
timestamps and the runs' end times, so a record written twice writes the same values.

    {"kind": "start",  "trial": HASH, "cell": CELL, "config": {...}, "ray_trial_id": ID,
                       "time": MS}
    {"kind": "epochs", "trial": HASH, "entries": [{"epoch": 1, "train_loss": ..., "time": MS}]}
    {"kind": "tags",   "trial": HASH, "tags": {...}}
    {"kind": "end",    "trial": HASH, "cell": CELL, "status": STATUS,
                       "error": {"summary": LINE, "text": TEXT} | null, "time": MS,
                       "config": {...} (only when no start of the trial was recorded)}
    {"kind": "pause",  "trial": HASH, "time": MS}      (not ended when the sweep stopped)
    {"kind": "sweep_end", "complete": BOOL, "time": MS}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from contract.outcome import Status
from contract.trial import ResultKey, TrialMeta


class Kind:
    """Values of a record's `kind`."""

    START = "start"
    EPOCHS = "epochs"
    TAGS = "tags"
    END = "end"
    PAUSE = "pause"
    SWEEP_END = "sweep_end"


STATES = (Kind.START, Kind.END, Kind.PAUSE)
"""The records that set where a trial stands; the last one in a batch wins."""
TIME = "time"


def now_ms() -> int:
    """The time a record carries: milliseconds since the epoch."""
    return int(time.time() * 1000)


def trial_hash(config: dict[str, Any]) -> str:
    """The identity of the trial a Tune config describes."""
    return TrialMeta.of(config).config_hash


def start_record(config: dict[str, Any], ray_trial_id: str, at: int) -> dict[str, Any]:
    """A trial started (or restarted) in Tune."""
    meta = TrialMeta.of(config)
    return {
        "kind": Kind.START,
        "trial": meta.config_hash,
        "cell": meta.cell,
        "config": config,
        "ray_trial_id": ray_trial_id,
        TIME: at,
    }


def epochs_record(config_hash: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch metrics of a trial, each entry with its `epoch` and `time`."""
    return {"kind": Kind.EPOCHS, "trial": config_hash, "entries": entries}


def tags_record(config_hash: str, tags: dict[str, str]) -> dict[str, Any]:
    """Tags for a trial's run."""
    return {"kind": Kind.TAGS, "trial": config_hash, "tags": tags}


def end_record(
    config: dict[str, Any],
    status: str,
    error: tuple[str, str] | None,
    at: int,
    with_config: bool = True,
) -> dict[str, Any]:
    """A trial ended with `status` (and, if it failed, its error: summary line and text);
    `with_config` when no start of it was recorded (its run may have to be created here)."""
    meta = TrialMeta.of(config)
    record = {
        "kind": Kind.END,
        "trial": meta.config_hash,
        "cell": meta.cell,
        "status": status,
        "error": None if error is None else {"summary": error[0], "text": error[1]},
        TIME: at,
    }
    if with_config:
        record["config"] = config
    return record


def pause_record(config_hash: str, at: int) -> dict[str, Any]:
    """A trial had not ended when the sweep stopped: it waits for the next start."""
    return {"kind": Kind.PAUSE, "trial": config_hash, TIME: at}


def sweep_end_record(complete: bool, at: int) -> dict[str, Any]:
    """The sweep stopped; `complete` when every trial it ran had ended."""
    return {"kind": Kind.SWEEP_END, "complete": complete, TIME: at}


@dataclass
class TrialUpdate:
    """What one batch of records says about one trial."""

    config_hash: str
    config: dict[str, Any] | None = None
    cell: str | None = None
    ray_trial_id: str | None = None
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    state: str | None = None
    """The last of START, END and PAUSE in the batch (None: none of them)."""
    time: int | None = None
    """When that last state record was made."""
    first_time: int | None = None
    """When the batch's first state record of the trial was made (a new run's start time)."""
    status: Status | None = None
    error: dict[str, str] | None = None


@dataclass
class Batch:
    """A batch of records collapsed: trials in order of first appearance, and the last end of
    the sweep among them."""

    trials: dict[str, TrialUpdate] = field(default_factory=dict)
    sweep_end: dict[str, Any] | None = None


def collate(records: list[dict[str, Any]]) -> Batch:
    """Collapse records, in order: each epoch once (its first entry), tags merged (later
    wins), and the trial's last state record deciding where it stands."""
    batch = Batch()
    for record in records:
        kind = record.get("kind")
        if kind == Kind.SWEEP_END:
            batch.sweep_end = record
            continue
        if kind not in (*STATES, Kind.EPOCHS, Kind.TAGS):
            continue  # an empty (damaged) record or one from a newer version
        update = batch.trials.setdefault(record["trial"], TrialUpdate(record["trial"]))
        if kind == Kind.EPOCHS:
            for entry in record["entries"]:
                update.epochs.setdefault(int(entry[ResultKey.EPOCH]), entry)
        elif kind == Kind.TAGS:
            update.tags.update(record["tags"])
        else:
            update.config = record.get("config") or update.config
            update.cell = record.get("cell") or update.cell
            update.state, update.time = kind, record[TIME]
            if update.first_time is None:
                update.first_time = record[TIME]
            if kind == Kind.START:
                update.ray_trial_id = record["ray_trial_id"]
            if kind == Kind.END:
                update.status = Status(record["status"])
                update.error = record.get("error")
            else:
                update.status, update.error = None, None
    return batch
