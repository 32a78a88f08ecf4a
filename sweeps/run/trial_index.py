"""The trial index: a compact, append-only record of every trial's status in a sweep's storage.

One file per Tune experiment (`<experiment dir>/trial_index.jsonl`): a header line, then one
JSON line per status change of a trial (`ledger.TrialEntry`); a trial's last line is its
status. The driver appends what changed each time Tune snapshots its experiment state
(`progress.RichProgressCallback.get_state`), so the file says what Tune's snapshot says, and
`sparsesweep status` and the end-of-run summary read it instead of loading every trial's
results through Tune (`sweeps.run.status`). A sweep without the file (run before it existed)
is read from Tune's state instead. On object storage, where nothing can be appended, each
snapshot rewrites the file with one line per trial.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from contract.outcome import Status
from sweeps.run.ledger import TrialEntry
from sweeps.spec.storage import is_remote, read_text, write_text_atomic

logger = logging.getLogger(__name__)

INDEX_FILE = "trial_index.jsonl"
HEADER_KEY = "sparsesweep_trial_index"
VERSION = 1


def index_path(experiment_dir: str) -> str:
    """Where the trial index of the Tune experiment in `experiment_dir` lives."""
    return f"{experiment_dir.rstrip('/')}/{INDEX_FILE}"


def header_line() -> str:
    """The first line of every index file."""
    return json.dumps({HEADER_KEY: VERSION}) + "\n"


def entry_line(entry: TrialEntry) -> str:
    """One entry as a JSON line."""
    payload: dict[str, Any] = {
        "config_hash": entry.config_hash,
        "cell": entry.cell,
        "stage": entry.stage,
        "lr_trial": entry.lr_trial,
        "lr": entry.lr,
        "seed": entry.seed,
        "status": entry.status.value,
        "value": entry.value,
    }
    return json.dumps(payload) + "\n"


def parse_entry(payload: dict[str, Any]) -> TrialEntry:
    """An entry read back from its JSON line (KeyError/ValueError if it is not one)."""
    value = payload["value"]
    return TrialEntry(
        config_hash=str(payload["config_hash"]),
        cell=str(payload["cell"]),
        stage=str(payload["stage"]),
        lr_trial=int(payload["lr_trial"]),
        lr=float(payload["lr"]),
        seed=int(payload["seed"]),
        status=Status(payload["status"]),
        value=None if value is None else float(value),
    )


def parse_index(text: str, where: str) -> dict[str, TrialEntry] | None:
    """{config hash: latest entry} of an index file's text; None when the text is not an index
    of this version. A line cut short (a driver killed while appending) is skipped."""
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get(HEADER_KEY) != VERSION:
        logger.warning(
            "%s is not a version %d trial index: read Tune's state instead", where, VERSION
        )
        return None
    entries: dict[str, TrialEntry] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = parse_entry(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("%s line %d is not a trial entry (skipped)", where, number)
            continue
        entries[entry.config_hash] = entry
    return entries


def read_index(experiment_dir: str) -> dict[str, TrialEntry] | None:
    """The latest entry of every trial in the experiment's index; None without an index."""
    path = index_path(experiment_dir)
    text = read_text(path)
    return None if text is None else parse_index(text, path)


class IndexWriter:
    """Appends the entries that changed since the last flush to one experiment's index."""

    def __init__(self, experiment_dir: str, stored: dict[str, TrialEntry] | None) -> None:
        self._path = index_path(experiment_dir)
        self._stored: dict[str, TrialEntry] = dict(stored or {})
        self._exists = stored is not None
        self._pending: dict[str, TrialEntry] = {}

    @property
    def path(self) -> str:
        """The index file."""
        return self._path

    def add(self, entry: TrialEntry) -> None:
        """Queue `entry` for the next flush, unless the file already says so."""
        if self._stored.get(entry.config_hash) == entry:
            self._pending.pop(entry.config_hash, None)
        else:
            self._pending[entry.config_hash] = entry

    def flush(self) -> None:
        """Write what changed (appended locally; the whole index on object storage)."""
        if not self._pending and self._exists:
            return
        self._stored.update(self._pending)
        if is_remote(self._path):
            lines = [entry_line(entry) for entry in self._stored.values()]
            write_text_atomic(self._path, header_line() + "".join(lines))
        else:
            self._append([entry_line(entry) for entry in self._pending.values()])
        self._pending.clear()
        self._exists = True

    def _append(self, lines: list[str]) -> None:
        path = Path(self._path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            size = handle.seek(0, 2)
            prefix = b""
            if size == 0:
                prefix = header_line().encode()
            else:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":  # a line cut short by a killed driver
                    prefix = b"\n"
            handle.write(prefix + "".join(lines).encode())
