"""Atomic, self-verifying training checkpoints with fallback to the last good one.

Each checkpoint is `ckpt-<epoch>.pt` (a `torch.save` payload) plus `ckpt-<epoch>.sha256`
(its digest). Both are written to a temporary file, fsynced and renamed, so a crash never
leaves a half-written file under the final name; a file that is truncated or corrupted
later is detected on load (unreadable, or digest mismatch) and skipped with a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """No checkpoint in a directory could be loaded."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a unique temporary file next to `path`, fsync it, rename it over `path`."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in `directory`, oldest epoch first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def save_checkpoint(directory: str | os.PathLike, payload: dict[str, Any], keep: int = 2) -> Path:
    """Atomically write `payload` as `ckpt-<payload['epoch']>.pt`, keep only the newest `keep`."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if not isinstance(payload.get("epoch"), int):
        raise ValueError("payload['epoch'] must be an int (the number of completed epochs)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = directory / f"ckpt-{payload['epoch']:06d}.pt"
    write_atomic(path, data)
    write_atomic(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    _fsync_directory(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def _read_verified(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    data = path.read_bytes()
    digest_file = path.with_suffix(".sha256")
    if digest_file.exists():
        expected = digest_file.read_text().strip()
        if hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"sha256 mismatch (expected {expected} from {digest_file.name})")
    payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "epoch" not in payload:
        raise ValueError("not a checkpoint payload (no 'epoch')")
    return payload


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """One checkpoint file's payload, verified against its sha256; `CheckpointError` names the file."""
    path = Path(path)
    try:
        return _read_verified(path, map_location)
    except Exception as error:  # unreadable, truncated, wrong digest or not a payload
        raise CheckpointError(f"{path}: {error}") from error


def load_latest_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The newest loadable checkpoint payload in `directory`, or None if there is none.

    A newest file that is truncated or corrupted triggers a warning naming it and the previous
    one is tried; if checkpoints exist but none loads, `CheckpointError` is raised.
    """
    candidates = list_checkpoints(directory)
    failures = []
    for path in reversed(candidates):
        try:
            return _read_verified(path, map_location)
        except Exception as error:  # any unreadable file is skipped, not fatal
            failures.append(f"{path}: {error}")
            warnings.warn(
                f"checkpoint {path} is unreadable or corrupted ({error}); "
                "falling back to the previous checkpoint",
                RuntimeWarning,
                stacklevel=2,
            )
    if failures:
        raise CheckpointError("no loadable checkpoint; " + "; ".join(failures))
    return None


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states, as checkpoint-safe values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states restored when the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def training_payload(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sparse_state: Any,
    epoch: int,
    history: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a run needs to continue bit-for-bit after `epoch` completed epochs."""
    return {
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sparse_state": sparse_state.state_dict() if sparse_state is not None else None,
        "rng": capture_rng_state(),
        "history": list(history),
        "extra": dict(extra or {}),
    }


def restore_training_state(
    payload: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sparse_state: Any,
) -> None:
    """Load a `training_payload` into freshly built objects and restore the RNG states."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    if sparse_state is not None and payload.get("sparse_state") is not None:
        sparse_state.load_state_dict(payload["sparse_state"])
    restore_rng_state(payload["rng"])
