"""What Tune keeps of a sweep: trimmed trial records, and one snapshot per experiment."""

from __future__ import annotations

import json
from pathlib import Path

from contract.names import EPOCH_METRICS
from sweeps.run.compact_state import CompactTrialState
from sweeps.run.tune_state import newest_state_size, prune_old_states


def reported(epoch: int) -> dict:
    """One epoch's report as a trial sends it, with a replayed history and Tune's config copy."""
    return {
        **dict.fromkeys(EPOCH_METRICS, 0.5),
        "epoch": epoch,
        "diverged": False,
        "checkpoint_path": f"/ckpt/{epoch}",
        "history": [{"epoch": e, "val_acc1": 1.0} for e in range(1, epoch)],
        "skipped_checkpoints": [],
        "config": {"train": {"lr": 0.1}, "meta": {"cell": "c"}},
        "training_iteration": epoch,
    }


def test_tune_keeps_only_what_it_and_the_sweep_read_of_a_trial() -> None:
    from ray.tune.experiment import Trial

    trial = Trial("any", stub=True, config={"meta": {}})
    callback = CompactTrialState("val_acc1")
    for epoch in (1, 2):
        result = reported(epoch)
        callback.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
        trial.update_last_result(result)  # what Tune does right after the callbacks
    kept = json.loads(trial.get_json_state()[1])
    assert sorted(kept["last_result"]) == sorted(
        [
            "epoch",
            "diverged",
            "checkpoint_path",
            "val_acc1",
            "test_acc1",  # what adaptive seeds pair on
            "training_iteration",
            "trial_id",
        ]
    )
    assert set(kept["metric_analysis"]) == {
        "epoch",
        "diverged",
        "val_acc1",
        "test_acc1",
        "training_iteration",
    }
    callback.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    ended = json.loads(trial.get_json_state()[1])
    assert ended["metric_analysis"] == {} and ended["metric_n_steps"] == {}
    assert ended["last_result"]["checkpoint_path"] == "/ckpt/2"


def test_only_the_newest_driver_starts_snapshot_files_are_kept(tmp_path: Path) -> None:
    sessions = ("2026-01-01_00-00-00", "2026-01-02_00-00-00", "2026-01-03_00-00-00")
    for session in sessions[:2]:
        for prefix, suffix in (
            ("experiment_state-", ".json"),
            ("searcher-state-", ".pkl"),
            ("search_gen_state-", ".json"),
            ("callback-states-", ".pkl"),
        ):
            (tmp_path / f"{prefix}{session}{suffix}").write_text(session)
    (tmp_path / f"searcher-state-{sessions[2]}.pkl").write_text("no experiment state yet")
    (tmp_path / "trial_index.jsonl").write_text("kept")
    assert newest_state_size(str(tmp_path)) == len(sessions[1])
    assert prune_old_states(str(tmp_path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"callback-states-{sessions[1]}.pkl",
        f"experiment_state-{sessions[1]}.json",
        f"search_gen_state-{sessions[1]}.json",
        f"searcher-state-{sessions[1]}.pkl",
        f"searcher-state-{sessions[2]}.pkl",
        "trial_index.jsonl",
    ]
    assert prune_old_states(str(tmp_path)) == 0
    assert prune_old_states(str(tmp_path / "missing")) == 0
