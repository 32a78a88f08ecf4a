"""The tracker's durable outbox: every record a sweep owes MLflow, in the order Tune's hooks
made them, kept on disk until MLflow holds it.

Tune's hooks append records (`sweeps.tracking.records`) as JSON lines to segment files; the
sender thread (`sweeps.tracking.sender`) reads them in order, writes them to MLflow and then
moves the acknowledged position past them. A record survives a killed driver once `append`
returns (the line has reached the operating system) and a crashed machine once `sync` has run:
at every snapshot of Tune's experiment state and when the sweep ends. Writing a record MLflow
already holds changes nothing (the sender's writes are idempotent), so the acknowledged
position may lag behind MLflow, never lead it.

The folder (`SweepLocation.outbox_dir`)::

    LOCK                    flock'ed by the one process that appends and sends (its pid inside)
    segment-00000001.jsonl  records, one JSON object a line; a new segment every SEGMENT_BYTES
    acked                   "<segment> <offset>": every record before that byte is in MLflow
    runs.jsonl              the run index (`sweeps.tracking.run_index`)

Segments wholly before the acknowledged position are deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment is closed and a new one started once it holds this many bytes."""
LOCK_FILE = "LOCK"
ACK_FILE = "acked"
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".jsonl"

logger = logging.getLogger(__name__)


class OutboxBusyError(RuntimeError):
    """Another process (a running sweep or `sparsesweep sync`) holds the outbox."""


@dataclass(frozen=True, order=True)
class Position:
    """A byte in the outbox: segment number and offset within it."""

    segment: int
    offset: int


@dataclass(frozen=True)
class OutboxStatus:
    """What an outbox holds, read without taking it: records not yet in MLflow, and the pid
    of the process that holds it (None when no process does)."""

    pending: int
    holder: int | None


def segment_path(directory: Path, number: int) -> Path:
    """The file of segment `number`."""
    return directory / f"{_SEGMENT_PREFIX}{number:08d}{_SEGMENT_SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    """The segments present, oldest first."""
    numbers = []
    for path in directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
        digits = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
        if digits.isdigit():
            numbers.append(int(digits))
    return sorted(numbers)


def read_ack(directory: Path) -> Position:
    """The acknowledged position (the start of segment 1 when nothing was acknowledged)."""
    try:
        segment, offset = (directory / ACK_FILE).read_text().split()
        return Position(int(segment), int(offset))
    except (FileNotFoundError, ValueError):
        return Position(1, 0)


def count_after(directory: Path, start: Position) -> int:
    """Records (complete lines) at or after `start`."""
    count = 0
    for number in segment_numbers(directory):
        if number < start.segment:
            continue
        with open(segment_path(directory, number), "rb") as handle:
            if number == start.segment:
                handle.seek(start.offset)
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
    return count


def outbox_status(directory: str | Path) -> OutboxStatus | None:
    """The outbox in `directory` as another process sees it; None if there is none."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    holder = None
    lock = folder / LOCK_FILE
    if lock.exists():
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                holder = int(text) if text.isdigit() else -1
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return OutboxStatus(count_after(folder, read_ack(folder)), holder)


class Outbox:
    """The outbox of one sweep, held by this process (`OutboxBusyError` if another holds it).

    `append` and `sync` are called by Tune's hooks, `read` and `ack` by the sender thread.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = _hold(self.directory / LOCK_FILE)
        try:
            self._acked = read_ack(self.directory)
            present = segment_numbers(self.directory)
            if present:
                self._segment = present[-1]
                drop_torn_tail(segment_path(self.directory, self._segment))
            else:  # a fresh segment after the acknowledged one, so no acknowledged byte is reused
                self._segment = self._acked.segment + (1 if self._acked.offset else 0)
            self._fd = self._open_segment()
            self._size = os.fstat(self._fd).st_size
            self._pending = count_after(self.directory, self._acked)
        except BaseException:
            self._lock_handle.close()
            raise
        self._mutex = threading.Lock()
        self._unsynced = False
        self._directory_unsynced = True

    # ------------------------------------------------------------------ writer (Tune's hooks)
    def append(self, record: dict[str, Any]) -> None:
        """Append one record; it survives this process once the call returns."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._mutex:
            if self._size and self._size + len(line) > SEGMENT_BYTES:
                self._roll()
            try:
                _write_all(self._fd, line)
            except OSError:
                os.ftruncate(self._fd, self._size)  # never leave half a line before the next
                raise
            self._size += len(line)
            self._pending += 1
            self._unsynced = True

    def sync(self) -> None:
        """Make every appended record durable on disk (fsync)."""
        with self._mutex:
            if self._unsynced:
                os.fsync(self._fd)
                self._unsynced = False
            if self._directory_unsynced:
                _fsync_directory(self.directory)
                self._directory_unsynced = False

    # ------------------------------------------------------------------ reader (sender thread)
    @property
    def acked(self) -> Position:
        """Every record before this position is in MLflow."""
        return self._acked

    @property
    def pending(self) -> int:
        """Records not yet acknowledged."""
        return self._pending

    def read(self, start: Position, limit: int) -> tuple[list[dict[str, Any]], Position]:
        """Up to `limit` records from `start`, and the position after them."""
        records: list[dict[str, Any]] = []
        position = start
        while len(records) < limit:
            later = [n for n in segment_numbers(self.directory) if n > position.segment]
            # a later segment exists, so this one is complete: what is read now is all of it
            try:
                with open(segment_path(self.directory, position.segment), "rb") as handle:
                    handle.seek(position.offset)
                    data = handle.read(SEGMENT_BYTES * 2)
            except FileNotFoundError:
                data = b""
            end = data.rfind(b"\n")
            if end < 0:
                if not later:
                    break
                position = Position(later[0], 0)
                continue
            lines = data[: end + 1].split(b"\n")[:-1][: limit - len(records)]
            records.extend(_decode(line, position) for line in lines)
            position = Position(position.segment, position.offset + sum(len(x) + 1 for x in lines))
        return records, position

    def ack(self, position: Position, count: int) -> None:
        """Every record before `position` (`count` of them since the last ack) is in MLflow:
        record it and delete the segments wholly before it."""
        temporary = self.directory / f".{ACK_FILE}.tmp"
        temporary.write_text(f"{position.segment} {position.offset}\n")
        os.replace(temporary, self.directory / ACK_FILE)
        with self._mutex:
            self._acked = position
            self._pending -= count
        for number in segment_numbers(self.directory):
            if number < position.segment:
                segment_path(self.directory, number).unlink(missing_ok=True)

    def close(self) -> None:
        """Sync, then let other processes take the outbox."""
        self.sync()
        os.close(self._fd)
        self._lock_handle.close()

    # ------------------------------------------------------------------ internals
    def _open_segment(self) -> int:
        path = segment_path(self.directory, self._segment)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._segment += 1
        self._fd = self._open_segment()
        self._size = 0
        self._directory_unsynced = True


def _decode(line: bytes, position: Position) -> dict[str, Any]:
    """One record; a line that is not a JSON object (damaged on disk) reads as an empty
    record, which the sender skips, so it cannot block the records after it."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        logger.error("skipping a damaged MLflow outbox record in segment %d", position.segment)
        return {}
    return record


def _hold(path: Path) -> Any:
    """Take the outbox's lock file for this process (with its pid inside) or raise."""
    handle = open(path, "a+")  # noqa: SIM115  (held open as long as the outbox)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise OutboxBusyError(
            f"the MLflow outbox {path.parent} is held by process {holder} (a running sweep or "
            "`sparsesweep sync`); wait for it to end"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def drop_torn_tail(path: Path) -> None:
    """Cut a line a killed writer left half-written at the end of a JSON-lines file."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        keep = size
        while keep > 0:
            start = max(0, keep - 65536)
            handle.seek(start)
            block = handle.read(keep - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep != size:
            handle.truncate(keep)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
