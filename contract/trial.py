"""A trial's identity and factors, the Tune config that carries them, and its result keys.

The searcher hands Tune a plain dict (`trial_config`): Tune pickles, logs and restores trial
configs, so the typed `TrialMeta` travels as its `to_dict()` and is read back with
`TrialMeta.of(config)` wherever a trial config is consumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


class Stage:
    """Values of `TrialMeta.stage`."""

    SEARCH = "search"
    FINAL = "final"
    EXTRA = "extra"
    """A seed the adaptive-seeds rule (`grid.seeds` mapping) added at the cell's chosen lr:
    compared with that lr's search seeds, never ranked (the lr search uses the initial seeds)."""


STAGES: tuple[str, ...] = (Stage.SEARCH, Stage.FINAL, Stage.EXTRA)


@dataclass(frozen=True)
class TrialMeta:
    """Who a trial is: its sweep, cell and factors, and the hash of its resolved TrainConfig.

    `config_hash` is the trial's identity: the MLflow run key, the checkpoint directory key and
    the searcher's dedup key. `lr_trial` is the Optuna trial number within the cell (every seed
    run at one suggested lr shares it).
    """

    sweep: str
    cell: str
    workload: str
    arm: str
    method: str
    sparsity: float
    budget: int
    seed: int
    lr: float
    weight_decay: float
    stage: str
    lr_trial: int
    config_hash: str

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(
                f"TrialMeta.stage must be one of {', '.join(STAGES)}, got {self.stage!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly dict Tune carries in the trial config under `"meta"`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrialMeta:
        """Read a `to_dict()` back; ValueError naming any missing or unknown key."""
        names = _FIELD_NAMES
        if len(payload) != len(names) or any(name not in payload for name in names):
            missing = [name for name in names if name not in payload]
            unknown = sorted(set(payload) - set(names))
            raise ValueError(
                f"trial meta: missing keys {missing}, unknown keys {unknown}; expected {list(names)}"
            )
        return cls(
            sweep=str(payload["sweep"]),
            cell=str(payload["cell"]),
            workload=str(payload["workload"]),
            arm=str(payload["arm"]),
            method=str(payload["method"]),
            sparsity=float(payload["sparsity"]),
            budget=int(payload["budget"]),
            seed=int(payload["seed"]),
            lr=float(payload["lr"]),
            weight_decay=float(payload["weight_decay"]),
            stage=str(payload["stage"]),
            lr_trial=int(payload["lr_trial"]),
            config_hash=str(payload["config_hash"]),
        )

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> TrialMeta:
        """The meta of a Tune trial config (see `trial_config`)."""
        return cls.from_dict(config[META_KEY])


_FIELD_NAMES: tuple[str, ...] = tuple(item.name for item in fields(TrialMeta))

META_KEY = "meta"
TRAIN_KEY = "train"


def trial_config(train: Mapping[str, Any], meta: TrialMeta) -> dict[str, Any]:
    """The Tune config of one trial: its resolved TrainConfig (as JSON) and its meta."""
    return {TRAIN_KEY: dict(train), META_KEY: meta.to_dict()}


def train_payload(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved TrainConfig dict of a Tune trial config."""
    return dict(config[TRAIN_KEY])


class ResultKey:
    """Keys a trial's reports carry besides the epoch metrics (`contract.names.EPOCH_METRICS`)."""

    EPOCH = "epoch"
    """Completed epochs (1-based); also the time attribute of early stopping."""
    HISTORY = "history"
    """Per-epoch metric dicts replayed from a checkpoint after a restart (first report only)."""
    DIVERGED = "diverged"
    """True on the report of the epoch whose loss became non-finite (its metrics are NaN)."""
    CHECKPOINT_PATH = "checkpoint_path"
    """Where the epoch's checkpoint was stored (set by Ray Train's Tune callback)."""
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    """The epoch this attempt resumed from (0: from scratch)."""
    SKIPPED_CHECKPOINTS = "skipped_checkpoints"
    """One `path: problem` line per corrupted checkpoint this attempt skipped."""
    STEPS_PER_EPOCH = "steps_per_epoch"
    """Optimizer steps per epoch (to judge ΔT against an epoch)."""
    MASKS_IN_SYNC = "masks_in_sync"
    """Whether every DDP rank held the same masks at the end of the epoch."""
