"""One way to name a sweep in every command: its name (NAME or --experiment) with its storage
(`--storage`), its tracking store (`--tracking-uri`) or its spec file (`--spec`); whichever is
given, the other is read from what the sweep recorded (the stored spec names its tracking
store; the MLflow experiment's tag `sparsesweep.spec_file` names its stored spec).

Neither given: the default storage (`./sweep_results`) if it holds the sweep, else the
default tracking store (`sqlite:///mlflow.db`). Every failure exits 2 naming what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeps.cli.common import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, fail, sweep_name

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="the sweep's storage_path (default: found from --tracking-uri, else "
        f"{DEFAULT_STORAGE})",
    ),
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="the sweep's MLflow tracking store, e.g. sqlite:///mlflow.db or http://HOST:PORT "
        "(default: found from --storage, else sqlite:///mlflow.db in the cwd)",
    ),
]
SpecOption = Annotated[
    Path | None,
    typer.Option(
        "--spec", help="the sweep's spec YAML: names the sweep, its storage and tracking store"
    ),
]


def stored_sweep(name: str, storage: str) -> Any:
    """The spec sweep `name` under `storage` runs under; exit 2 naming the known sweeps if none."""
    from sweeps.spec.load import read_spec_file
    from sweeps.spec.storage import SPEC_FILE, is_remote

    root = storage if is_remote(storage) else os.path.abspath(storage)
    try:
        spec = read_spec_file(f"{root.rstrip('/')}/{name}/{SPEC_FILE}")
    except ValueError as error:
        raise fail(str(error)) from None
    if spec is None:
        known = (
            sorted(p.parent.name for p in Path(root).glob(f"*/{SPEC_FILE}"))
            if not is_remote(root)
            else []
        )
        raise fail(
            f"no sweep named {name!r} under --storage {root}"
            + (f"; known sweeps: {', '.join(known)}" if known else " (no sweeps there)")
            + "; allowed: --storage PATH, --tracking-uri URI or --spec FILE of the sweep"
        )
    return spec


def _spec_of_file(spec_path: Path, name: str | None) -> Any:
    """The stored spec of the sweep a spec YAML describes (it names the sweep's storage)."""
    from sweeps.spec.load import load_spec

    try:
        given = load_spec(spec_path)
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    if name is not None and name != given.name:
        raise fail(
            f"--spec {spec_path} describes sweep {given.name!r}, not {name!r}; allowed: the "
            "name the spec gives, or no name"
        )
    return stored_sweep(given.name, given.storage_path)


def _spec_of_store(name: str, tracking_uri: str) -> Any:
    """The stored spec of sweep `name`, found through its MLflow experiment's tags."""
    from sweeps.cli.common import check_tracking_option
    from sweeps.spec.load import read_spec_file
    from sweeps.tracking.experiment import recorded_spec_file

    check_tracking_option(tracking_uri, must_exist=True)
    spec_file = recorded_spec_file(tracking_uri, name)
    if spec_file is None:
        raise fail(
            f"--tracking-uri {tracking_uri} has no sweep named {name!r} that records its "
            "storage; allowed: --storage PATH or --spec FILE of the sweep"
        )
    try:
        spec = read_spec_file(spec_file)
    except ValueError as error:
        raise fail(str(error)) from None
    if spec is None:
        raise fail(
            f"sweep {name!r} recorded its spec at {spec_file}, which is gone; allowed: "
            "--storage PATH of the sweep's current storage"
        )
    return spec


def locate_sweep(
    name: str | None,
    experiment: str | None,
    storage: str | None,
    tracking_uri: str | None,
    spec_path: Path | None,
) -> Any:
    """The spec the sweep runs under (as stored beside its results), found from whichever of
    storage, tracking store or spec file was given (see the module docstring)."""
    if spec_path is not None:
        named = name if name is not None else experiment
        return _spec_of_file(spec_path, named)
    chosen = sweep_name(name, experiment)
    if storage is not None or tracking_uri is None:
        return stored_sweep(chosen, storage or DEFAULT_STORAGE)
    return _spec_of_store(chosen, tracking_uri)


def locate_store(
    name: str | None,
    experiment: str | None,
    storage: str | None,
    tracking_uri: str | None,
    spec_path: Path | None,
) -> tuple[str, str]:
    """(sweep name, tracking URI) for a command that reads MLflow only: the tracking store as
    given, else the one the sweep's stored spec names, else the default store."""
    if spec_path is not None or storage is not None:
        spec = locate_sweep(name, experiment, storage, None, spec_path)
        return spec.name, spec.tracking_uri
    chosen = sweep_name(name, experiment)
    if tracking_uri is not None:
        return chosen, tracking_uri
    from sweeps.spec.load import read_spec_file
    from sweeps.spec.storage import SPEC_FILE

    try:
        spec = read_spec_file(f"{os.path.abspath(DEFAULT_STORAGE)}/{chosen}/{SPEC_FILE}")
    except ValueError:
        spec = None
    return chosen, DEFAULT_TRACKING_URI if spec is None else spec.tracking_uri
