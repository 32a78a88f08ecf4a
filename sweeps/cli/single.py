"""Single-run CLI commands: `train` (one run in-process), `masks` (layer densities), `skew`.

`register(app)` adds them to the project's typer app. Heavy imports (torch) happen inside
the commands so `--help` stays fast. Bad input prints a message naming the flag or field and
exits with code 2, without a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from sweeps.cli.common import fail

DEFAULT_NUM_CLASSES = {"resnet20": 100, "resnet50": 1000, "mlp": 10, "small_cnn": 10}
MODEL_INPUTS = {"resnet20": (3, 32), "resnet50": (3, 224), "mlp": (1, 8), "small_cnn": (1, 8)}
DISTRIBUTIONS = ("erk", "uniform")


def _validation_message(error: ValidationError, source: str) -> str:
    from sparseopt.config import TrainConfig
    from sweeps.spec.messages import format_validation_error

    details = format_validation_error(error, TrainConfig).replace("\n", "\n  ")
    return f"invalid config ({source}):\n  {details}"


def train(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TrainConfig YAML file (defaults if omitted)"),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field, e.g. --set optim.lr=0.05 (repeatable)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="output directory (default runs/<dataset>-<model>-<hash>)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no per-epoch progress")] = False,
) -> None:
    """Train one run in-process (no Ray); re-running with the same --out resumes it."""
    from sparseopt.config import load_train_config
    from sweeps.spec.checks import data_root_problem

    if config is not None and not config.is_file():
        raise fail(f"--config {config}: no such file; allowed: a TrainConfig YAML file")
    source = " + ".join(
        [*([f"--config {config}"] if config else []), *(["--set"] if overrides else [])]
    )
    try:
        cfg = load_train_config(str(config) if config else None, overrides or [])
    except ValidationError as error:
        raise fail(_validation_message(error, source or "defaults")) from None
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    problem = data_root_problem(cfg.data)
    if problem is not None:
        raise fail(problem)
    out_dir = out or Path("runs") / f"{cfg.data.name}-{cfg.model.name}-{cfg.config_hash()}"

    from sparseopt.checkpoint import CheckpointError
    from sparseopt.engine import DivergedError
    from sparseopt.runner import run_training

    try:
        result = run_training(cfg, out_dir, progress=not quiet)
    except (DivergedError, CheckpointError) as error:
        Console(stderr=True).print(f"[bold red]failed:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    except ValueError as error:
        raise fail(str(error)) from None
    final = result.history[-1] if result.history else {}
    summary = {key: final[key] for key in ("epoch", "val_acc1", "test_acc1") if key in final}
    Console(quiet=quiet).print(f"run directory: {result.out_dir}  {json.dumps(summary)}")


def masks(
    model: Annotated[
        str, typer.Option("--model", help="resnet20 | resnet50 | mlp | small_cnn")
    ] = "resnet50",
    sparsity: Annotated[float, typer.Option("--sparsity", help="target sparsity in [0, 1)")] = 0.9,
    distribution: Annotated[str, typer.Option("--distribution", help="erk | uniform")] = "erk",
    num_classes: Annotated[
        int | None, typer.Option("--num-classes", help="classifier outputs (default per model)")
    ] = None,
    dense_layers: Annotated[
        list[str] | None, typer.Option("--dense-layer", help="layer kept dense (repeatable)")
    ] = None,
    dense_in_budget: Annotated[
        bool,
        typer.Option(
            "--dense-in-budget/--dense-outside-budget",
            help="count dense layers inside the sparsity budget (default) or exclude them",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Per-layer shape, density and nonzeros of a model's masks at a target sparsity."""
    if model not in DEFAULT_NUM_CLASSES:
        raise fail(f"--model must be one of {', '.join(DEFAULT_NUM_CLASSES)}; got {model!r}")
    if distribution not in DISTRIBUTIONS:
        raise fail(
            f"--distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}"
        )
    if not 0.0 <= sparsity < 1.0:
        raise fail(f"--sparsity must be in [0, 1); got {sparsity}")
    classes = num_classes if num_classes is not None else DEFAULT_NUM_CLASSES[model]
    if classes < 1:
        raise fail(f"--num-classes must be >= 1; got {classes}")

    import sparseopt
    from sparseopt.config import ModelConfig
    from sparseopt.models import build_model

    in_channels, image_size = MODEL_INPUTS[model]
    network = build_model(ModelConfig(name=model), classes, in_channels, image_size)
    shapes = {name: tuple(p.shape) for name, p in sparseopt.maskable_weights(network).items()}
    density_fn = sparseopt.erk_densities if distribution == "erk" else sparseopt.uniform_densities
    try:
        densities = density_fn(shapes, sparsity, tuple(dense_layers or ()), dense_in_budget)
    except ValueError as error:
        raise fail(f"--dense-layer / --sparsity: {error}") from None
    nonzeros = sparseopt.layer_nonzeros(shapes, densities)
    report = _masks_report(shapes, densities, nonzeros)
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_masks_table(report, model, distribution)


def _masks_report(
    shapes: dict[str, tuple[int, ...]], densities: dict[str, float], nonzeros: dict[str, int]
) -> dict[str, Any]:
    layers = [
        {"name": name, "shape": list(shape), "density": densities[name], "nonzeros": nonzeros[name]}
        for name, shape in shapes.items()
    ]
    params = sum(_numel(shape) for shape in shapes.values())
    kept = sum(nonzeros.values())
    return {
        "layers": layers,
        "total": {"params": params, "nonzeros": kept, "sparsity": 1.0 - kept / params},
    }


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _print_masks_table(report: dict[str, Any], model: str, distribution: str) -> None:
    table = Table(title=f"{model} masks ({distribution})")
    for column in ("layer", "shape", "density", "nonzeros"):
        table.add_column(column, justify="left" if column in ("layer", "shape") else "right")
    for layer in report["layers"]:
        shape = "x".join(str(dim) for dim in layer["shape"])
        table.add_row(layer["name"], shape, f"{layer['density']:.4f}", str(layer["nonzeros"]))
    total = report["total"]
    table.add_section()
    table.add_row(
        "total (maskable weights)",
        str(total["params"]),
        f"sparsity {total['sparsity']:.4f}",
        str(total["nonzeros"]),
    )
    Console().print(table)


def _parse_sparsities(values: list[str]) -> list[float]:
    parsed = []
    for value in values:
        for item in value.split(","):
            try:
                number = float(item)
            except ValueError:
                raise fail(f"--sparsities: {item!r} is not a number") from None
            if not 0.0 <= number < 1.0:
                raise fail(f"--sparsities values must be in [0, 1); got {number}")
            parsed.append(number)
    return parsed


def skew(
    sparsities: Annotated[
        list[str] | None,
        typer.Option("--sparsities", help="sparsities in [0, 1), comma-separated or repeated"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the curve as JSON")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="save a plot to this image file")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="network seeds averaged")] = 5,
) -> None:
    """Gradient-skew experiment: sparse/dense gradient ratio with and without BatchNorm vs theory."""
    values = _parse_sparsities(sparsities or ["0.5,0.8,0.9,0.95"])

    from sparseopt.diagnostics import gradient_skew_curve, plot_gradient_skew

    curve = gradient_skew_curve(values, seeds=seeds)
    if plot is not None:
        plot_gradient_skew(curve, plot)
    if as_json:
        typer.echo(json.dumps(curve))
        return
    table = Table(title="gradient skew: sparse / dense mean |grad| of the first hidden layer")
    for column in ("sparsity", "with BN", "without BN", "theory 1/sqrt(1-s)"):
        table.add_column(column, justify="right")
    for row in curve:
        table.add_row(
            f"{row['sparsity']:.3f}",
            f"{row['ratio_bn']:.3f}",
            f"{row['ratio_no_bn']:.3f}",
            f"{row['theory']:.3f}",
        )
    console = Console()
    console.print(table)
    if plot is not None:
        console.print(f"plot saved to {plot}")


def register(app: typer.Typer) -> None:
    """Add the `train`, `masks` and `skew` commands to `app`."""
    app.command("train")(train)
    app.command("masks")(masks)
    app.command("skew")(skew)
