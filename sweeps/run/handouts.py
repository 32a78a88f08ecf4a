"""The hand-out journal: which Tune trial id each config was handed out under, written at once.

Tune snapshots the searcher with its experiment state every 10 s or more. A driver killed
between two snapshots restores a searcher that has forgotten the trials it handed out since,
and hands their configs out again; Tune would run them under new trial ids, next to the
trial directories the first ids left behind. One line per hand-out (`trial id`, config hash)
is appended to `<experiment dir>/handouts.jsonl` before Tune sees the trial, so the restored
search generator (`sweeps.run.search.SweepSearchGenerator`) gives such a config its first
trial id back: every config is one Tune trial, however often the driver dies.

Local storage only (object stores cannot append; there a config handed out after the last
snapshot gets a new trial id, as in Tune itself). Appends are not fsynced: the journal
survives a killed driver, not a machine that loses its page cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sweeps.spec.storage import is_remote

logger = logging.getLogger(__name__)

HANDOUTS_FILE = "handouts.jsonl"


def handouts_path(experiment_dir: str) -> str | None:
    """The journal of the Tune experiment in `experiment_dir`; None on object storage."""
    if is_remote(experiment_dir):
        return None
    return f"{experiment_dir.rstrip('/')}/{HANDOUTS_FILE}"


def record_handout(path: str, trial_id: str, config_hash: str) -> None:
    """Append one hand-out (a line cut short by an earlier kill is ended first)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"trial_id": trial_id, "config_hash": config_hash}) + "\n"
    with open(target, "a+b") as handle:
        size = handle.seek(0, 2)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                line = "\n" + line
        handle.write(line.encode())


def read_handouts(path: str) -> dict[str, str]:
    """{config hash: the trial id it was first handed out under} (empty without a journal)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    first: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
            first.setdefault(str(payload["config_hash"]), str(payload["trial_id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("%s line %d is not a hand-out (skipped)", path, number)
    return first
