"""Where a sweep keeps its state (its folders and MLflow artifact location), and reading and
writing its small state files on local disk or object storage."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec

SPEC_FILE = "sweep_spec.yaml"
TRAIN_RUNS_DIR = "train_runs"
ARTIFACTS_DIR = "mlflow_artifacts"
OUTBOX_DIR = "mlflow_outbox"
LOCAL_OUTBOX_ROOT = "~/.cache/sparsesweep/outbox"
"""Where the driver keeps the MLflow outbox of a sweep on object storage (files there cannot be
appended to): one folder per sweep on the driver's own disk."""


def is_remote(path: str) -> bool:
    """True for object-store URIs such as s3:// or gs://."""
    return "://" in path


def _filesystem(path: str):  # -> (pyarrow.fs.FileSystem, str)
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(
        path if is_remote(path) else Path(path).resolve().as_uri()
    )


def read_text(path: str) -> str | None:
    """A local or object-store file's text; None if it does not exist."""
    import pyarrow.fs

    filesystem, inner = _filesystem(path)
    if filesystem.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(inner) as stream:
        return stream.read().decode()


def write_text_atomic(path: str, text: str) -> None:
    """Write a local file atomically (temp + fsync + rename) or an object-store object."""
    if is_remote(path):
        filesystem, inner = _filesystem(path)
        with filesystem.open_output_stream(inner) as stream:
            stream.write(text.encode())
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SweepLocation:
    """Where a sweep keeps its state."""

    experiment_dir: str
    spec_file: str
    train_runs_dir: str
    artifact_location: str | None
    outbox_dir: str
    """The tracker's MLflow outbox: in the sweep's folder, or for a sweep on object storage in
    `LOCAL_OUTBOX_ROOT` on the driver's disk (always a local path)."""


def locate(spec: SweepSpec) -> SweepLocation:
    """The sweep's directories and MLflow artifact location."""
    experiment_dir = f"{spec.storage_path.rstrip('/')}/{spec.name}"
    # a store MLflow opens directly (not a server, which has its own artifact root) would put
    # artifacts in ./mlruns of whatever directory the sweep starts from
    direct_store = not spec.tracking_uri.startswith(("http://", "https://"))
    artifacts = f"{experiment_dir}/{ARTIFACTS_DIR}" if direct_store else None
    if artifacts and not is_remote(artifacts):
        artifacts = Path(artifacts).resolve().as_uri()
    if is_remote(experiment_dir):
        digest = hashlib.sha256(experiment_dir.encode()).hexdigest()[:12]
        outbox = str(Path(LOCAL_OUTBOX_ROOT).expanduser() / f"{spec.name}-{digest}")
    else:
        outbox = f"{experiment_dir}/{OUTBOX_DIR}"
    return SweepLocation(
        experiment_dir=experiment_dir,
        spec_file=f"{experiment_dir}/{SPEC_FILE}",
        train_runs_dir=f"{experiment_dir}/{TRAIN_RUNS_DIR}",
        artifact_location=artifacts,
        outbox_dir=outbox,
    )
