"""Finding every checkpoint a trial left on its storage, newest first, and loading the best one.

Ray Train hands a restarted worker group only the latest checkpoint it *registered*. A worker
killed right after `ray.train.report` can leave a newer checkpoint fully written to storage but
never registered, and a registered checkpoint can be corrupted on disk later. Listing the run
directory itself (through a pyarrow filesystem, so object stores work too) lets a trial resume
from, or report the history of, the newest checkpoint that actually loads.
"""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any

import pyarrow.fs
import ray.train

from sparseopt.checkpoint import CheckpointError, load_latest_checkpoint

logger = logging.getLogger(__name__)

RAY_CHECKPOINT_PREFIX = "checkpoint_"


def run_directory(storage_path: str, run_name: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of the Ray Train run `run_name` under `storage_path` (dir or URI)."""
    if "://" in storage_path:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    else:
        filesystem, root = pyarrow.fs.LocalFileSystem(), os.path.abspath(storage_path)
    return filesystem, posixpath.join(root, run_name)


def stored_checkpoints(
    filesystem: pyarrow.fs.FileSystem, run_dir: str
) -> list[ray.train.Checkpoint]:
    """The checkpoint directories under a Ray Train run directory, newest first.

    Ray Train names them `checkpoint_<timestamp>`, so the name orders them by time.
    """
    selector = pyarrow.fs.FileSelector(run_dir, allow_not_found=True)
    paths = [
        info.path
        for info in filesystem.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.Directory
        and posixpath.basename(info.path).startswith(RAY_CHECKPOINT_PREFIX)
    ]
    return [
        ray.train.Checkpoint(path=path, filesystem=filesystem)
        for path in sorted(paths, key=posixpath.basename, reverse=True)
    ]


def resume_candidates(
    storage: Any, handed: ray.train.Checkpoint | None
) -> list[ray.train.Checkpoint]:
    """Checkpoints to try, newest first: every one in the trial's run directory, plus the one
    Ray Train handed over if it lies elsewhere. `storage` is `ray.train.get_context().get_storage()`."""
    found = stored_checkpoints(storage.storage_filesystem, storage.experiment_fs_path)
    if handed is not None and all(handed.path != checkpoint.path for checkpoint in found):
        found.insert(0, handed)
    return found


def load_newest(
    candidates: list[ray.train.Checkpoint],
) -> tuple[dict[str, Any] | None, list[str]]:
    """The payload of the first candidate that loads (None if none does), and one message per
    corrupted or empty checkpoint skipped on the way, naming its files."""
    skipped: list[str] = []
    for checkpoint in candidates:
        with checkpoint.as_directory() as directory:
            try:
                payload = load_latest_checkpoint(directory)
            except CheckpointError as error:
                payload, problem = None, str(error)
            else:
                problem = "no ckpt-*.pt file in it"
        if payload is not None:
            return payload, skipped
        logger.warning("skipping corrupted checkpoint %s: %s", checkpoint.path, problem)
        skipped.append(f"{checkpoint.path}: {problem}")
    return None, skipped
