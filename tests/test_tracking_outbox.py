"""The tracker's durable outbox (`sweeps.tracking.outbox`) and run index, on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweeps.tracking import outbox as outbox_module
from sweeps.tracking.outbox import (
    Outbox,
    OutboxBusyError,
    Position,
    outbox_status,
    segment_numbers,
    segment_path,
)
from sweeps.tracking.run_index import RunIndex


def records(count: int, start: int = 0) -> list[dict]:
    return [{"kind": "tags", "trial": f"t{n}", "tags": {"n": str(n)}} for n in range(start, count)]


def test_records_come_back_in_order_and_leave_once_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "box")
    for record in records(5):
        box.append(record)
    assert box.pending == 5
    first, middle = box.read(box.acked, 2)
    assert first == records(2)
    box.ack(middle, 2)
    rest, end = box.read(box.acked, 100)
    assert rest == records(5, 2) and box.pending == 3
    assert box.read(end, 100) == ([], end)
    box.ack(end, 3)
    assert box.pending == 0
    box.close()
    assert outbox_status(tmp_path / "box") == outbox_module.OutboxStatus(0, None)


def test_segments_roll_and_acknowledged_ones_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = len(json.dumps(records(1)[0], separators=(",", ":"))) + 1
    monkeypatch.setattr(outbox_module, "SEGMENT_BYTES", 3 * line)
    box = Outbox(tmp_path)
    for record in records(10):
        box.append(record)
    assert segment_numbers(tmp_path) == [1, 2, 3, 4]  # 3 + 3 + 3 + 1 records
    got, position = box.read(box.acked, 7)
    assert got == records(7) and position == Position(3, line)
    box.ack(position, 7)
    assert segment_numbers(tmp_path) == [3, 4]
    rest, end = box.read(box.acked, 100)
    assert rest == records(10, 7) and end == Position(4, line)
    box.close()
    reopened = Outbox(tmp_path)
    assert reopened.pending == 3 and reopened.acked == Position(3, line)
    reopened.close()


def test_a_half_written_last_line_is_dropped_when_the_outbox_is_opened_again(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path)
    for record in records(2):
        box.append(record)
    box.close()
    with open(segment_path(tmp_path, 1), "ab") as handle:
        handle.write(b'{"kind": "tags", "tri')  # a writer killed mid-line
    assert outbox_status(tmp_path).pending == 2
    reopened = Outbox(tmp_path)
    reopened.append(records(3)[2])
    assert reopened.read(reopened.acked, 10)[0] == records(3)
    reopened.close()


def test_a_damaged_line_is_skipped_not_blocking(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.append(records(1)[0])
    os.write(box._fd, b"\x00garbage\n")
    box.append(records(2)[1])
    assert box.read(box.acked, 10)[0] == [records(1)[0], {}, records(2)[1]]
    box.close()


def test_one_process_holds_the_outbox_and_others_see_who(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.append(records(1)[0])
    with pytest.raises(OutboxBusyError, match=f"held by process {os.getpid()}"):
        Outbox(tmp_path)
    assert outbox_status(tmp_path) == outbox_module.OutboxStatus(1, os.getpid())
    box.close()
    assert outbox_status(tmp_path).holder is None
    assert outbox_status(tmp_path / "none") is None


STORE = "sqlite:////data/mlflow.db"


def test_the_run_index_keeps_runs_intents_statuses_and_aggregates(tmp_path: Path) -> None:
    index = RunIndex(tmp_path, STORE)
    assert not index.existed
    index.intend([(("trial", "a"), "run-a"), (("trial", "b"), None)])
    index.add([(("trial", "a"), "run-a")])
    index.set_statuses([(("cell", "c"), "FINISHED")])
    index.mark_aggregated("c", 6)
    index.close()
    with open(tmp_path / "runs.jsonl", "ab") as handle:
        handle.write(b'{"run": ["trial", "b"], "run')  # killed mid-line
    again = RunIndex(tmp_path, STORE)
    assert again.existed
    assert again.get(("trial", "a")) == "run-a" and again.get(("trial", "b")) is None
    assert again.open_intent(("trial", "a")) == (False, None)
    assert again.open_intent(("trial", "b")) == (True, None)
    assert again.status(("cell", "c")) == "FINISHED" and again.aggregated("c") == 6
    assert again.runs("trial") == {("trial", "a"): "run-a"}
    again.add([(("trial", "b"), "run-b")])
    again.close()
    assert RunIndex(tmp_path, STORE).get(("trial", "b")) == "run-b"


def test_the_run_index_of_another_store_is_not_used(tmp_path: Path) -> None:
    """A sweep run again against another MLflow store (its tracking_uri changed) must create its
    runs there: the old store's run ids would fail as foreign keys, forever."""
    legacy = tmp_path / "runs.jsonl"
    legacy.write_text('{"run": ["cell", "c"], "run_id": "old-cell"}\n')  # an older tracker's
    assert RunIndex(tmp_path, STORE).get(("cell", "c")) == "old-cell"  # unmarked: kept
    moved = RunIndex(tmp_path, "sqlite:////elsewhere/mlflow.db")
    assert moved.get(("cell", "c")) is None and moved.runs("cell") == {}
    moved.add([(("cell", "c"), "new-cell")])
    moved.close()
    assert RunIndex(tmp_path, "sqlite:////elsewhere/mlflow.db").get(("cell", "c")) == "new-cell"
    assert RunIndex(tmp_path, STORE).get(("cell", "c")) == "old-cell"  # back: its runs again


def test_a_forgotten_run_is_forgotten_with_its_status_and_aggregates(tmp_path: Path) -> None:
    index = RunIndex(tmp_path, STORE)
    index.add([(("cell", "c"), "run-c"), (("trial", "a"), "run-a")])
    index.set_statuses([(("cell", "c"), "FINISHED")])
    index.mark_aggregated("c", 6)
    assert index.identities(["run-c", "other"]) == {"run-c": ("cell", "c")}
    index.forget([("cell", "c")])
    index.close()
    again = RunIndex(tmp_path, STORE)
    assert again.get(("cell", "c")) is None and again.status(("cell", "c")) is None
    assert again.aggregated("c") is None and again.get(("trial", "a")) == "run-a"
