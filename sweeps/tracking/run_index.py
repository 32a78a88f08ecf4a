"""Which MLflow run stands for each trial, cell and curve of a sweep, on disk beside the outbox.

A run is known by its identity (`sweeps.tracking.runs.run_identity`: its role and the tags
that say what it stands for, e.g. a trial's config hash). Before the sender creates runs it
records the intents (with the run ids when it chooses them itself) and syncs them; once MLflow
holds the runs it records them. A sender that starts after a killed one resolves the intents
left open by looking the identities up in MLflow, so no run is ever created twice. The index
also keeps the status the sender last gave each cell and curve run, and which cells'
aggregates were logged for how many expected trials, so that a status is set only when it
changes and the end of a sweep aggregates only the cells that still need it.

One JSON object a line, appended (`runs.jsonl` in the outbox folder)::

    {"intent": ["trial", "3f2a…"], "run_id": null}
    {"run": ["trial", "3f2a…"], "run_id": "9b1c…"}
    {"status": ["cell", "default/rigl/s=0.9/e=2"], "value": "FINISHED"}
    {"aggregated": "default/rigl/s=0.9/e=2", "expected": 6}
    {"forget": ["trial", "3f2a…"]}
    {"store": "sqlite:////data/mlflow.db"}

A `forget` line drops what the index held for an identity whose run the store no longer
holds (deleted by a user, or the store replaced): its run is created again.

A `store` line says which MLflow store the entries after it refer to; only the entries of the
store a sender writes to are used. A sweep run again against another store (its `tracking_uri`
changed) so creates its runs there (the old store's run ids do not exist in it), and finds its
old runs again if it goes back. Entries before the first `store` line (an older tracker's)
belong to the store named by that first line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from contract.names import Role
from sweeps.tracking.outbox import drop_torn_tail

Identity = tuple[str, ...]
INDEX_FILE = "runs.jsonl"


def _store_of(line: bytes) -> str | None:
    """The store a `store` line names (None: another kind of line, or damaged)."""
    if not line.startswith(b'{"store"'):
        return None
    try:
        return str(json.loads(line)["store"])
    except (ValueError, KeyError):
        return None


class RunIndex:
    """The run index of one sweep (opened by the process that holds its outbox)."""

    def __init__(self, directory: str | Path, store: str) -> None:
        self.path = Path(directory) / INDEX_FILE
        self.existed = self.path.exists()
        self._runs: dict[Identity, str] = {}
        self._intents: dict[Identity, str | None] = {}
        self._aggregated: dict[str, int] = {}
        self._statuses: dict[Identity, str] = {}
        lines: list[bytes] = []
        if self.existed:
            drop_torn_tail(self.path)
            lines = self.path.read_bytes().splitlines()
        stores = [_store_of(line) for line in lines]
        # the store of the entries being read: at first the one the first `store` line names
        marked = next((named for named in stores if named), store)
        for line, named in zip(lines, stores, strict=True):
            marked = named or marked
            if marked == store:
                self._load(line)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if marked != store or not any(stores):
            self._append([{"store": store}])

    def _load(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:  # damaged on disk: an entry lost costs a lookup in MLflow
            return
        if "run" in entry:
            identity = tuple(entry["run"])
            self._runs[identity] = entry["run_id"]
            self._intents.pop(identity, None)
        elif "intent" in entry:
            self._intents[tuple(entry["intent"])] = entry["run_id"]
        elif "status" in entry:
            self._statuses[tuple(entry["status"])] = entry["value"]
        elif "aggregated" in entry:
            self._aggregated[entry["aggregated"]] = int(entry["expected"])
        elif "forget" in entry:
            self._drop(tuple(entry["forget"]))

    def _drop(self, identity: Identity) -> None:
        self._runs.pop(identity, None)
        self._intents.pop(identity, None)
        self._statuses.pop(identity, None)
        if identity[0] == Role.CELL:
            self._aggregated.pop(identity[1], None)

    def get(self, identity: Identity) -> str | None:
        """The run of `identity`, if one was recorded."""
        return self._runs.get(identity)

    def open_intent(self, identity: Identity) -> tuple[bool, str | None]:
        """(whether a run of `identity` may have been created without being recorded, the id
        it was to have when the sender chose it)."""
        if identity in self._intents:
            return True, self._intents[identity]
        return False, None

    def intend(self, intents: Iterable[tuple[Identity, str | None]]) -> None:
        """Record, durably, that runs are about to be created (ids where already chosen)."""
        lines = []
        for identity, run_id in intents:
            self._intents[identity] = run_id
            lines.append({"intent": list(identity), "run_id": run_id})
        self._append(lines)
        os.fsync(self._fd)

    def add(self, entries: Iterable[tuple[Identity, str]]) -> None:
        """Record runs MLflow now holds (a later entry for an identity replaces an earlier)."""
        lines = []
        for identity, run_id in entries:
            self._runs[identity] = run_id
            self._intents.pop(identity, None)
            lines.append({"run": list(identity), "run_id": run_id})
        self._append(lines)

    def forget(self, identities: Iterable[Identity]) -> None:
        """Drop the runs, statuses and aggregate marks of identities whose runs are gone."""
        lines = []
        for identity in identities:
            self._drop(identity)
            lines.append({"forget": list(identity)})
        self._append(lines)

    def identities(self, run_ids: Iterable[str]) -> dict[str, Identity]:
        """The identity each of these run ids was recorded for (run id -> identity)."""
        wanted = set(run_ids)
        return {run: identity for identity, run in self._runs.items() if run in wanted}

    def runs(self, role: str) -> dict[Identity, str]:
        """Every recorded run of one role."""
        return {identity: run for identity, run in self._runs.items() if identity[0] == role}

    def status(self, identity: Identity) -> str | None:
        """The MLflow status the sender last set on the run of `identity` (None: none)."""
        return self._statuses.get(identity)

    def set_statuses(self, statuses: Iterable[tuple[Identity, str]]) -> None:
        """Record the statuses just set."""
        lines = []
        for identity, value in statuses:
            self._statuses[identity] = value
            lines.append({"status": list(identity), "value": value})
        self._append(lines)

    def aggregated(self, cell: str) -> int | None:
        """The expected trial count the cell's aggregates were last logged for (None: never)."""
        return self._aggregated.get(cell)

    def mark_aggregated(self, cell: str, expected: int) -> None:
        """Record that the cell's aggregates are logged, settled for `expected` trials."""
        self._aggregated[cell] = expected
        self._append([{"aggregated": cell, "expected": expected}])

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)

    def _append(self, entries: list[dict]) -> None:
        if entries:
            data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries)
            os.write(self._fd, data.encode())
