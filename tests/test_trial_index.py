"""The trial index: appended at Tune's snapshots, read back by `status` and the summary."""

from __future__ import annotations

from pathlib import Path

from sweep_helpers import trial_meta

from contract.outcome import Status
from sweeps.run.ledger import TrialEntry, TrialLedger
from sweeps.run.trial_index import INDEX_FILE, IndexWriter, read_index


def entry(seed: int, status: Status, value: float | None = None) -> TrialEntry:
    meta = trial_meta(seed=seed, config_hash=f"h{seed}")
    return TrialEntry.of(meta, status, None if value is None else {"val_acc1": value}, "val_acc1")


def test_a_flush_appends_only_what_changed_and_the_last_line_wins(tmp_path: Path) -> None:
    writer = IndexWriter(str(tmp_path), None)
    writer.add(entry(0, Status.RUNNING))
    writer.add(entry(1, Status.RUNNING))
    writer.flush()
    writer.add(entry(0, Status.RUNNING))  # unchanged: not written again
    writer.add(entry(1, Status.FINISHED, 70.0))
    writer.flush()
    writer.flush()
    lines = (tmp_path / INDEX_FILE).read_text().splitlines()
    assert len(lines) == 1 + 2 + 1
    read = read_index(str(tmp_path))
    assert read == {"h0": entry(0, Status.RUNNING), "h1": entry(1, Status.FINISHED, 70.0)}


def test_a_line_cut_short_by_a_killed_driver_is_skipped_and_ended(tmp_path: Path) -> None:
    writer = IndexWriter(str(tmp_path), None)
    writer.add(entry(0, Status.FINISHED, 50.0))
    writer.flush()
    path = tmp_path / INDEX_FILE
    path.write_text(path.read_text() + '{"config_hash": "h1", "cell"')
    assert read_index(str(tmp_path)) == {"h0": entry(0, Status.FINISHED, 50.0)}
    again = IndexWriter(str(tmp_path), read_index(str(tmp_path)))
    again.add(entry(1, Status.FAILED))
    again.flush()
    assert read_index(str(tmp_path)) == {
        "h0": entry(0, Status.FINISHED, 50.0),
        "h1": entry(1, Status.FAILED),
    }


def test_no_index_or_another_format_reads_as_none(tmp_path: Path) -> None:
    assert read_index(str(tmp_path)) is None
    (tmp_path / INDEX_FILE).write_text('{"something": "else"}\n')
    assert read_index(str(tmp_path)) is None


def test_the_ledger_ranks_lr_trials_as_the_selection_rule_does() -> None:
    ledger = TrialLedger("val_acc1", seeds_per_lr_trial=2)
    for seed, value in ((0, 50.0), (1, 70.0)):
        ledger.record(
            TrialEntry.of(
                trial_meta(seed=seed, lr=0.1, lr_trial=0, config_hash=f"a{seed}"),
                Status.FINISHED,
                {"val_acc1": value},
                "val_acc1",
            )
        )
    assert ledger.best("default/rigl/s=0.9/e=2") == (60.0, 0.1)
    worse = trial_meta(seed=0, lr=0.3, lr_trial=1, config_hash="b0")
    ledger.record(TrialEntry.of(worse, Status.RUNNING, None, "val_acc1"))
    ledger.record(
        TrialEntry.of(
            trial_meta(seed=1, lr=0.3, lr_trial=1, config_hash="b1"),
            Status.FINISHED,
            {"val_acc1": 99.0},
            "val_acc1",
        )
    )
    assert ledger.best("default/rigl/s=0.9/e=2") == (60.0, 0.1)  # lr 0.3 has a seed running
    ledger.record(TrialEntry.of(worse, Status.DIVERGED, {"val_acc1": float("nan")}, "val_acc1"))
    assert ledger.best("default/rigl/s=0.9/e=2") == (60.0, 0.1)  # (0 + 99) / 2 < 60
    assert (ledger.count(Status.FINISHED), ledger.count(Status.DIVERGED), ledger.ended()) == (
        3,
        1,
        4,
    )
    assert ledger.counts() == {"finished": 3, "diverged": 1}
