"""Finding a trial's older Ray Train checkpoints, for falling back past a corrupted one."""

from __future__ import annotations

from pathlib import Path

RAY_CHECKPOINT_PREFIX = "checkpoint_"


def previous_checkpoints(latest: Path) -> list[Path]:
    """The trial's other checkpoint directories beside `latest`, newest first.

    Ray Train names them `checkpoint_<timestamp>` under the run directory, so the name
    orders them. Only local/shared-filesystem storage has siblings to list; for object
    storage `latest` is a downloaded copy and the list is empty.
    """
    parent = latest.parent
    if not latest.name.startswith(RAY_CHECKPOINT_PREFIX) or not parent.is_dir():
        return []
    siblings = [
        path
        for path in parent.iterdir()
        if path.is_dir() and path.name.startswith(RAY_CHECKPOINT_PREFIX) and path.name < latest.name
    ]
    return sorted(siblings, reverse=True)
