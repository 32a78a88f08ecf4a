"""The one epoch loop (`sparseopt.loop.run_epochs`) as every session sees it: the report keys,
the history replayed after a resume, the final report of a finished run, a divergence."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from contract.names import SPLIT_METRICS
from contract.trial import ResultKey
from sparseopt import recipe as recipe_module
from sparseopt.config import TrainConfig
from sparseopt.engine import DivergedError
from sparseopt.loop import run_epochs

RESULT_KEYS = {
    ResultKey.MASKS_IN_SYNC,
    ResultKey.RESUMED_FROM_EPOCH,
    ResultKey.SKIPPED_CHECKPOINTS,
    ResultKey.STEPS_PER_EPOCH,
    ResultKey.HISTORY,
    ResultKey.DIVERGED,
}
TIMINGS = {"epoch_time_s", "samples_per_s"}


class MemorySession:
    """A session that keeps its checkpoints and reports in memory (rank 0 of 1, CPU)."""

    rank = 0
    world_size = 1

    def __init__(self, checkpoint: dict[str, Any] | None = None, skipped: list[str] | None = None):
        self.checkpoints = [] if checkpoint is None else [checkpoint]
        self.skipped = skipped or []
        self.reports: list[dict[str, Any]] = []
        self.hooked: list[tuple[int, int]] = []

    def device(self) -> torch.device:
        return torch.device("cpu")

    def load_checkpoint(self) -> tuple[dict[str, Any] | None, list[str]]:
        return (self.checkpoints[-1] if self.checkpoints else None), self.skipped

    def step_hook(self, epoch: int, steps: int):
        self.hooked.append((epoch, steps))
        return None

    def report(self, result: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        self.reports.append(result)
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)


def tiny_config() -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
            "model": {"name": "mlp", "hidden": 16},
            "sparse": {"method": "rigl", "sparsity": 0.8, "delta_t": 2},
            "schedule": {"warmup_epochs": 0},
            "epochs": 3,
            "device": "cpu",
        }
    )


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def test_reports_carry_every_result_key_and_a_resume_replays_the_history_once():
    cfg = tiny_config()
    straight = MemorySession()
    outcome = run_epochs(cfg, straight)
    assert [report[ResultKey.EPOCH] for report in straight.reports] == [1, 2, 3]
    steps = straight.reports[0][ResultKey.STEPS_PER_EPOCH]
    assert straight.hooked == [(0, steps), (1, steps), (2, steps)]
    for report in straight.reports:
        assert set(report) >= RESULT_KEYS and report[ResultKey.MASKS_IN_SYNC] is True
        assert report[ResultKey.RESUMED_FROM_EPOCH] == 0 and report[ResultKey.HISTORY] == []
    assert outcome.history == straight.checkpoints[-1]["history"]
    assert all(ResultKey.MASKS_IN_SYNC not in entry for entry in outcome.history)
    assert straight.checkpoints[-1]["extra"] == {"config_hash": cfg.config_hash()}

    first = MemorySession()
    assert run_epochs(cfg, first, until_epoch=1).history == first.checkpoints[0]["history"]
    resumed = MemorySession(first.checkpoints[-1], skipped=["ckpt-x: truncated"])
    outcome = run_epochs(cfg, resumed)
    assert outcome.resumed_from_epoch == 1
    assert [report[ResultKey.EPOCH] for report in resumed.reports] == [2, 3]
    assert resumed.reports[0][ResultKey.HISTORY] == first.checkpoints[0]["history"]
    assert resumed.reports[1][ResultKey.HISTORY] == []
    assert {r[ResultKey.SKIPPED_CHECKPOINTS][0] for r in resumed.reports} == {"ckpt-x: truncated"}
    assert without_timing(outcome.history) == without_timing(straight.checkpoints[-1]["history"])
    for name, value in straight.checkpoints[-1]["model"].items():
        assert torch.equal(value, resumed.checkpoints[-1]["model"][name]), name


def test_a_finished_run_reports_its_last_epoch_with_the_whole_history():
    cfg = tiny_config().model_copy(update={"epochs": 1})
    done = MemorySession()
    run_epochs(cfg, done)
    again = MemorySession(done.checkpoints[-1])
    outcome = run_epochs(cfg, again)
    (final,) = again.reports
    assert final[ResultKey.EPOCH] == 1 and final[ResultKey.RESUMED_FROM_EPOCH] == 1
    assert final[ResultKey.HISTORY] == done.checkpoints[-1]["history"] == outcome.history
    assert len(again.checkpoints) == 1 and again.hooked == []


def test_a_divergence_is_one_nan_report_and_the_outcome_says_why(monkeypatch):
    real_train = recipe_module.train_one_epoch
    calls = []

    def diverging(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DivergedError("non-finite training loss at or before step 3 of the epoch")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(recipe_module, "train_one_epoch", diverging)
    session = MemorySession()
    outcome = run_epochs(tiny_config(), session)
    assert outcome.diverged == "non-finite training loss at or before step 3 of the epoch"
    assert len(outcome.history) == 1 and len(session.checkpoints) == 1
    last = session.reports[-1]
    assert last[ResultKey.EPOCH] == 2 and last[ResultKey.DIVERGED] is True
    assert all(math.isnan(last[key]) for key in SPLIT_METRICS)
    assert [report[ResultKey.DIVERGED] for report in session.reports] == [False, True]


@pytest.mark.parametrize("until", [0, 1])
def test_until_epoch_stops_early_without_training_past_it(until):
    session = MemorySession()
    outcome = run_epochs(tiny_config(), session, until_epoch=until)
    assert len(outcome.history) == until == len(session.checkpoints)
