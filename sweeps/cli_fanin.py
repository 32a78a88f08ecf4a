"""`sparsesweep fanin`: how unequal the per-neuron fan-ins of a model's masks are.

SparseOpt rescales neuron i's gradient by f_i = sqrt(k_i / mean k); it can only matter where
the fan-ins k_i of one layer differ. This command shows that spread for fresh masks of a model
at a sparsity, or for the masks stored in a training checkpoint (a trial's masks after RigL/SET
moved them). Heavy imports happen inside the command so `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sweeps.cli_single import DEFAULT_NUM_CLASSES, DISTRIBUTIONS, MODEL_INPUTS, _fail

TRIAL_PREFIX = "trial-"
"""Ray Train run directories of a sweep are named trial-<config hash> (trainables.runtime)."""


def fanin(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="checkpoint file, a directory of them, or a trial's Ray Train run directory "
            "(its newest checkpoint_* is read)",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help=" | ".join(DEFAULT_NUM_CLASSES))
    ] = "small_cnn",
    sparsity: Annotated[float, typer.Option("--sparsity", help="target sparsity in (0, 1)")] = 0.9,
    distribution: Annotated[
        str, typer.Option("--distribution", help=" | ".join(DISTRIBUTIONS))
    ] = "erk",
    seed: Annotated[int, typer.Option("--seed", help="mask seed")] = 0,
    runs: Annotated[
        Path | None,
        typer.Option(
            "--runs",
            help="a sweep's train_runs/ directory: one JSON line per trial "
            "(config hash + per-layer rows) from each trial's newest checkpoint",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Per-layer spread of the neurons' active fan-in k_i and of SparseOpt's f_i."""
    if runs is not None:
        _print_runs(runs)
        return
    if checkpoint is not None:
        masks = _checkpoint_masks(checkpoint)
        title = f"fan-in spread of {checkpoint}"
    else:
        masks = _fresh_masks(model, sparsity, distribution, seed)
        title = f"fan-in spread of fresh {model} masks ({distribution}, s={sparsity:g})"

    from sparseopt.diagnostics import fan_in_spread

    rows = fan_in_spread(masks)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=title)
    for column in ("layer", "rows", "N", "mean k", "cv k", "f min", "f max", "empty rows"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in rows:
        table.add_row(
            str(row["layer"]),
            str(row["rows"]),
            str(row["fan_in"]),
            f"{row['mean_k']:.1f}",
            f"{row['cv_k']:.3f}",
            f"{row['f_min']:.3f}",
            f"{row['f_max']:.3f}",
            str(row["empty_rows"]),
        )
    Console().print(table)


def _fresh_masks(model: str, sparsity: float, distribution: str, seed: int) -> dict[str, Any]:
    """The masks `sparseopt.attach` gives `model` at `sparsity` (what a trial starts from)."""
    if model not in DEFAULT_NUM_CLASSES:
        raise _fail(f"--model must be one of {', '.join(DEFAULT_NUM_CLASSES)}; got {model!r}")
    if distribution not in DISTRIBUTIONS:
        raise _fail(
            f"--distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}"
        )
    if not 0.0 < sparsity < 1.0:
        raise _fail(f"--sparsity must be in (0, 1); got {sparsity}")

    import torch

    import sparseopt
    from sparseopt.config import ModelConfig
    from sparseopt.models import build_model

    in_channels, image_size = MODEL_INPUTS[model]
    network = build_model(
        ModelConfig(name=model), DEFAULT_NUM_CLASSES[model], in_channels, image_size
    )
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    state = sparseopt.attach(
        network,
        optimizer,
        method="static",
        sparsity=sparsity,
        distribution=distribution,
        seed=seed,
        broadcast_masks=False,
    )
    return dict(state.masks)


def _checkpoint_masks(path: Path) -> dict[str, Any]:
    """The masks stored in `path` (see `_stored_masks`), or a bad-input exit naming it."""
    from sparseopt.checkpoint import CheckpointError

    if not path.exists():
        raise _fail(f"--checkpoint {path}: no such file or directory")
    try:
        masks = _stored_masks(path)
    except CheckpointError as error:
        raise _fail(f"--checkpoint {path}: {error}") from None
    if masks is None:
        raise _fail(
            f"--checkpoint {path}: no sparse masks in it (a dense run, or not a checkpoint)"
        )
    return masks


def _stored_masks(path: Path) -> dict[str, Any] | None:
    """Masks in a checkpoint file, a checkpoint directory or a Ray Train run directory (its
    newest checkpoint_*); None when there is no checkpoint or it holds no masks."""
    from sparseopt.checkpoint import load_checkpoint, load_latest_checkpoint
    from trainables.checkpoints import RAY_CHECKPOINT_PREFIX

    if path.is_file():
        payload = load_checkpoint(path)
    else:
        ray_checkpoints = sorted(
            child
            for child in path.iterdir()
            if child.is_dir() and child.name.startswith(RAY_CHECKPOINT_PREFIX)
        )
        payload = load_latest_checkpoint(ray_checkpoints[-1] if ray_checkpoints else path)
    state = (payload or {}).get("sparse_state")
    return dict(state["masks"]) if state and state.get("masks") else None


def _print_runs(runs: Path) -> None:
    """One JSON line per trial directory `trial-<config hash>` under `runs` that has masks."""
    from sparseopt.checkpoint import CheckpointError
    from sparseopt.diagnostics import fan_in_spread

    if not runs.is_dir():
        raise _fail(f"--runs {runs}: not a directory (expected <storage>/<sweep>/train_runs)")
    trials = sorted(
        path for path in runs.iterdir() if path.is_dir() and path.name.startswith(TRIAL_PREFIX)
    )
    if not trials:
        raise _fail(f"--runs {runs}: no {TRIAL_PREFIX}<config hash> directories in it")
    for trial in trials:
        try:
            masks = _stored_masks(trial)
        except CheckpointError as error:
            Console(stderr=True).print(f"skipped {trial}: {error}", highlight=False)
            continue
        if masks is not None:  # dense trials have none
            config_hash = trial.name.removeprefix(TRIAL_PREFIX)
            typer.echo(json.dumps({"config_hash": config_hash, "layers": fan_in_spread(masks)}))


def register(app: typer.Typer) -> None:
    """Add the `fanin` command to `app`."""
    app.command("fanin")(fanin)
