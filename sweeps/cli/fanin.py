"""`sparsesweep fanin`: how unequal the per-neuron fan-ins of a model's masks are, and what
SparseOpt's factors did to the weights over training.

SparseOpt rescales neuron i's gradient by f_i = sqrt(k_i / mean k); it can only matter where
the fan-ins k_i of one layer differ. This command shows that spread for fresh masks of a model
at a sparsity, or for the masks stored in a training checkpoint (a trial's masks after RigL/SET
moved them). For checkpoints it also shows, per layer and per stored checkpoint (epoch), the
row weights against k_i (mean |w| and row L2 norm of the low and high fan-in terciles, their
correlation with k_i) and the following BatchNorm's |gamma|, running std and |gamma|/std per
channel against k_i: f_i > 1 can inflate high-fan-in rows, BN hides that from the network, and
RigL's layer-wide magnitude ranking then drops the low-fan-in rows' weights. In --json each
layer row gains "history": one entry per checkpoint, and "row_trace": the newest checkpoint's
per-update row norms and active counts before the drop and after the grow, rows by index
(runs with `sparse.trace_rows`; `sparseopt.diagnostics.row_norm_trace`). Heavy imports happen inside the command
so `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sweeps.cli.common import fail
from sweeps.cli.single import DEFAULT_NUM_CLASSES, DISTRIBUTIONS, MODEL_INPUTS

LayerEntries = dict[str, list[dict[str, Any]]]
"""Layer name -> entries (per checkpoint, or per topology update)."""
TRIAL_PREFIX = "trial-"
"""Ray Train run directories of a sweep are named trial-<config hash> (trainables.runtime)."""


def fanin(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="checkpoint file, a directory of them, or a trial's Ray Train run directory: "
            "the spread of the newest masks, and row weights / BN scale vs fan-in per checkpoint",
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
            "(config hash + per-layer rows of its newest masks, each with its history over "
            "the trial's checkpoints)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Per-layer spread of the neurons' active fan-in k_i and of SparseOpt's f_i; for checkpoints
    also row weights and BN scale against k_i over the stored checkpoints."""
    if runs is not None:
        _print_runs(runs)
        return
    history: dict[str, list[dict[str, Any]]] = {}
    trace: dict[str, list[dict[str, Any]]] = {}
    if checkpoint is not None:
        masks, history, trace = _checkpoint_trial(checkpoint)
        title = f"fan-in spread of {checkpoint}"
    else:
        masks = _fresh_masks(model, sparsity, distribution, seed)
        title = f"fan-in spread of fresh {model} masks ({distribution}, s={sparsity:g})"

    from sparseopt.diagnostics import fan_in_spread

    rows = _with_history(fan_in_spread(masks), history, trace)
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
    console = Console()
    console.print(table)
    if any(history.values()):
        console.print(_history_table(rows, f"row weights and BN scale vs fan-in k_i: {checkpoint}"))


HISTORY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("epoch", "epoch", "{}"),
    ("k low", "k_low", "{:.1f}"),
    ("k high", "k_high", "{:.1f}"),
    ("|w| low", "w_abs_low", "{:.3g}"),
    ("|w| high", "w_abs_high", "{:.3g}"),
    ("‖w‖ low", "row_norm_low", "{:.3g}"),
    ("‖w‖ high", "row_norm_high", "{:.3g}"),
    ("r(‖w‖,k)", "corr_norm_k", "{:+.2f}"),
    ("r(|w|,k)", "corr_w_abs_k", "{:+.2f}"),
    ("BN", "bn", "{}"),
    ("|γ|/σ low", "bn_scale_low", "{:.3g}"),
    ("|γ|/σ high", "bn_scale_high", "{:.3g}"),
    ("r(|γ|/σ,k)", "corr_bn_scale_k", "{:+.2f}"),
)
"""(header, history key, format) of the row-weights table; terciles of rows ranked by k_i."""


def _history_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One table row per (layer, checkpoint) of the layers' "history" entries."""
    table = Table(title=title)
    table.add_column("layer")
    for header, _, _ in HISTORY_COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        for entry in row["history"]:
            cells = [
                "—" if entry.get(key) is None else fmt.format(entry[key])
                for _, key, fmt in HISTORY_COLUMNS
            ]
            table.add_row(str(row["layer"]), *cells)
    return table


def _with_history(
    rows: list[dict[str, Any]],
    history: dict[str, list[dict[str, Any]]],
    trace: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Each spread row with "history" (its layer's per-checkpoint row-weight entries) and
    "row_trace" (its layer's per-update row entries)."""
    return [
        {
            **row,
            "history": history.get(str(row["layer"]), []),
            "row_trace": trace.get(str(row["layer"]), []),
        }
        for row in rows
    ]


def _fresh_masks(model: str, sparsity: float, distribution: str, seed: int) -> dict[str, Any]:
    """The masks `sparseopt.attach` gives `model` at `sparsity` (what a trial starts from)."""
    if model not in DEFAULT_NUM_CLASSES:
        raise fail(f"--model must be one of {', '.join(DEFAULT_NUM_CLASSES)}; got {model!r}")
    if distribution not in DISTRIBUTIONS:
        raise fail(
            f"--distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}"
        )
    if not 0.0 < sparsity < 1.0:
        raise fail(f"--sparsity must be in (0, 1); got {sparsity}")

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


def _checkpoint_trial(path: Path) -> tuple[dict[str, Any], LayerEntries, LayerEntries]:
    """The newest masks, per-layer history and row trace stored under `path` (see
    `_read_trial`), or a bad-input exit naming --checkpoint and the path."""
    from sparseopt.checkpoint import CheckpointError

    if not path.exists():
        raise fail(f"--checkpoint {path}: no such file or directory")
    try:
        masks, history, trace = _read_trial(path)
    except CheckpointError as error:
        raise fail(f"--checkpoint {path}: {error}") from None
    if masks is None:
        raise fail(f"--checkpoint {path}: no sparse masks in it (a dense run, or not a checkpoint)")
    return masks, history, trace


def _checkpoint_files(path: Path) -> list[Path]:
    """The checkpoint files at `path`, oldest first: the file itself; in a Ray Train run directory
    the files of each checkpoint_* directory in name (time) order; else the dir's ckpt-*.pt."""
    from sparseopt.checkpoint import list_checkpoints
    from trainables.checkpoints import RAY_CHECKPOINT_PREFIX

    if path.is_file():
        return [path]
    ray_checkpoints = sorted(
        child
        for child in path.iterdir()
        if child.is_dir() and child.name.startswith(RAY_CHECKPOINT_PREFIX)
    )
    if ray_checkpoints:
        return [file for directory in ray_checkpoints for file in list_checkpoints(directory)]
    return list_checkpoints(path)


def _read_trial(path: Path) -> tuple[dict[str, Any] | None, LayerEntries, LayerEntries]:
    """(masks of the newest loadable checkpoint with masks, or None; layer -> one row-weights
    entry per checkpoint holding masks and model weights, oldest first; layer -> the row trace
    of that newest checkpoint). Checkpoints are read one at a time; an unreadable one is skipped
    with a note on stderr, and `CheckpointError` is raised when none was readable."""
    from sparseopt.checkpoint import CheckpointError, load_checkpoint
    from sparseopt.diagnostics import row_norm_trace, weight_fan_in_rows

    masks: dict[str, Any] | None = None
    history: LayerEntries = {}
    trace: LayerEntries = {}
    files, failures = _checkpoint_files(path), []
    for file in files:
        try:
            payload = load_checkpoint(file)
        except CheckpointError as error:
            failures.append(str(error))
            Console(stderr=True).print(f"skipped {error}", highlight=False)
            continue
        state = payload.get("sparse_state")
        if not state or not state.get("masks"):
            continue
        masks = dict(state["masks"])
        trace = row_norm_trace(state)
        if payload.get("model"):
            for row in weight_fan_in_rows(masks, payload["model"]):
                entry = {"epoch": payload["epoch"], **row}
                history.setdefault(str(entry.pop("layer")), []).append(entry)
    if files and len(failures) == len(files):
        raise CheckpointError("no loadable checkpoint; " + "; ".join(failures))
    return masks, history, trace


def _print_runs(runs: Path) -> None:
    """One JSON line per trial directory `trial-<config hash>` under `runs` that has masks; each
    layer row carries its "history" over the trial's checkpoints."""
    from sparseopt.checkpoint import CheckpointError
    from sparseopt.diagnostics import fan_in_spread

    if not runs.is_dir():
        raise fail(f"--runs {runs}: not a directory (expected <storage>/<sweep>/train_runs)")
    trials = sorted(
        path for path in runs.iterdir() if path.is_dir() and path.name.startswith(TRIAL_PREFIX)
    )
    if not trials:
        raise fail(f"--runs {runs}: no {TRIAL_PREFIX}<config hash> directories in it")
    for trial in trials:
        try:
            masks, history, trace = _read_trial(trial)
        except CheckpointError as error:
            Console(stderr=True).print(f"skipped {trial}: {error}", highlight=False)
            continue
        if masks is not None:  # dense trials have none
            config_hash = trial.name.removeprefix(TRIAL_PREFIX)
            layers = _with_history(fan_in_spread(masks), history, trace)
            typer.echo(json.dumps({"config_hash": config_hash, "layers": layers}))


def register(app: typer.Typer) -> None:
    """Add the `fanin` command to `app`."""
    app.command("fanin")(fanin)
