"""`train`, `masks` and `skew` commands: JSON outputs and bad-input exit codes."""

from __future__ import annotations

import json
import math

import pytest
import typer
import yaml
from typer.testing import CliRunner

from sweeps.cli.single import register


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    return application


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def assert_bad_input(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    output = " ".join(result.output.split())  # rich wraps long messages
    for fragment in fragments:
        assert fragment in output, output


def test_masks_json_structure_and_totals(app, runner):
    result = runner.invoke(app, ["masks", "--model", "resnet20", "--sparsity", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"layers", "total"}
    assert set(report["total"]) == {"params", "nonzeros", "sparsity"}
    layers = report["layers"]
    assert all(set(layer) == {"name", "shape", "density", "nonzeros"} for layer in layers)
    assert layers[0]["name"] == "conv1" and layers[0]["shape"] == [16, 3, 3, 3]
    assert layers[-1] == {
        "name": "fc",
        "shape": [100, 64],
        "density": layers[-1]["density"],
        "nonzeros": layers[-1]["nonzeros"],
    }
    params = sum(math.prod(layer["shape"]) for layer in layers)
    assert params == 276_656  # ResNet-20 conv + fc weights at 100 classes
    assert report["total"]["params"] == params
    assert report["total"]["nonzeros"] == sum(layer["nonzeros"] for layer in layers)
    assert report["total"]["nonzeros"] == round(0.1 * params)
    assert report["total"]["sparsity"] == pytest.approx(0.9, abs=1e-5)


def test_masks_dense_layer_and_uniform(app, runner):
    result = runner.invoke(
        app,
        [
            "masks",
            "--model",
            "mlp",
            "--sparsity",
            "0.5",
            "--distribution",
            "uniform",
            "--dense-layer",
            "7",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)["layers"]}
    assert layers["7"]["density"] == 1.0 and layers["7"]["nonzeros"] == 256 * 10
    assert layers["1"]["density"] == pytest.approx(layers["4"]["density"], abs=1e-4)


def test_masks_table_output(app, runner):
    result = runner.invoke(app, ["masks", "--model", "small_cnn", "--sparsity", "0.8"])
    assert result.exit_code == 0, result.output
    assert "total (maskable weights)" in result.stdout and "sparsity 0.8000" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--distribution", "gaussian"], "--distribution must be one of erk, uniform"),
        (["--model", "vgg"], "--model must be one of"),
        (["--sparsity", "1.5"], "--sparsity must be in [0, 1)"),
        (["--model", "mlp", "--dense-layer", "nope"], "unknown layers"),
    ],
)
def test_masks_bad_input(app, runner, args, fragment):
    assert_bad_input(runner.invoke(app, ["masks", *args]), fragment)


def test_skew_json(app, runner, tmp_path):
    plot = tmp_path / "skew.png"
    result = runner.invoke(
        app, ["skew", "--json", "--sparsities", "0.5,0.9", "--seeds", "1", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["sparsity"] for row in rows] == [0.5, 0.9]
    assert all(set(row) == {"sparsity", "ratio_bn", "ratio_no_bn", "theory"} for row in rows)
    assert rows[1]["ratio_bn"] > 2.5 and plot.stat().st_size > 0


@pytest.mark.parametrize(("value", "fragment"), [("0.5,abc", "is not a number"), ("1.0", "[0, 1)")])
def test_skew_bad_sparsities(app, runner, value, fragment):
    assert_bad_input(runner.invoke(app, ["skew", "--sparsities", value]), "--sparsities", fragment)


def write_config(path, **changes) -> None:
    payload = {
        "data": {"name": "digits", "batch_size": 256},
        "model": {"name": "mlp", "hidden": 16},
        "sparse": {"method": "static", "sparsity": 0.5},
        "schedule": {"warmup_epochs": 0},
        "epochs": 1,
        "device": "cpu",
    }
    payload.update(changes)
    path.write_text(yaml.safe_dump(payload))


def test_train_runs_and_writes_the_run_directory(app, runner, tmp_path):
    config = tmp_path / "run.yaml"
    write_config(config)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["train", "--config", str(config), "--set", "seed=3", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--set", "optim.lr=-1"], ["optim.lr"]),
        (["--set", "optim.lr"], ["--set", "KEY=VALUE"]),
        (["--set", "sparse.method=magic"], ["sparse.method"]),
        (["--set", "data.name=cifar100"], ["data.root"]),
        (
            ["--set", "data.name=cifar100", "--set", "data.root=/nonexistent"],
            ["data.root", "cifar-100-python"],
        ),
    ],
)
def test_train_bad_input(app, runner, tmp_path, args, fragments):
    config = tmp_path / "run.yaml"
    write_config(config)
    result = runner.invoke(
        app, ["train", "--config", str(config), "--out", str(tmp_path / "o"), *args]
    )
    assert_bad_input(result, *fragments)
    assert not (tmp_path / "o").exists()  # nothing written for a run that cannot start


def test_train_missing_config_file(app, runner, tmp_path):
    assert_bad_input(
        runner.invoke(app, ["train", "--config", str(tmp_path / "none.yaml")]), "--config"
    )


def test_fanin_of_fresh_masks_and_of_a_checkpoint(tmp_path):
    import torch

    from sparseopt.checkpoint import save_checkpoint
    from sweeps.cli.fanin import register as register_fanin

    application = typer.Typer()
    register_fanin(application)
    application.command("noop")(lambda: None)  # a second command keeps `fanin` a subcommand
    runner = CliRunner()
    fresh = runner.invoke(
        application, ["fanin", "--model", "small_cnn", "--sparsity", "0.95", "--json"]
    )
    assert fresh.exit_code == 0, fresh.output
    rows = json.loads(fresh.stdout)
    assert [row["rows"] for row in rows] == [16, 32, 64, 10]
    assert all(row["f_min"] <= 1.0 <= row["f_max"] for row in rows)

    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    payload = {"epoch": 3, "sparse_state": {"masks": {"fc.weight": mask}}}
    save_checkpoint(tmp_path / "run" / "checkpoint_2026-01-01_00-00-00.000000", payload)
    stored = runner.invoke(application, ["fanin", "--checkpoint", str(tmp_path / "run"), "--json"])
    assert stored.exit_code == 0, stored.output
    (row,) = json.loads(stored.stdout)
    assert (row["layer"], row["mean_k"], row["cv_k"]) == ("fc.weight", 2.5, 0.6)

    dense = {"epoch": 1, "sparse_state": None}
    save_checkpoint(tmp_path / "dense", dense)
    sweep_runs = tmp_path / "train_runs"
    save_checkpoint(sweep_runs / "trial-abc123" / "checkpoint_2026-01-01_00-00-00.000000", payload)
    save_checkpoint(sweep_runs / "trial-dense0" / "checkpoint_2026-01-01_00-00-00.000000", dense)
    listed = runner.invoke(application, ["fanin", "--runs", str(sweep_runs)])
    assert listed.exit_code == 0, listed.output
    (line,) = listed.stdout.splitlines()  # the dense trial has no masks: no line
    assert json.loads(line)["config_hash"] == "abc123"
    assert json.loads(line)["layers"][0]["cv_k"] == 0.6
    missing = runner.invoke(application, ["fanin", "--checkpoint", str(tmp_path / "dense")])
    assert_bad_input(missing, "no sparse masks")
    assert_bad_input(
        runner.invoke(application, ["fanin", "--checkpoint", str(tmp_path / "nope")]),
        "no such file",
    )
    assert_bad_input(runner.invoke(application, ["fanin", "--sparsity", "1.0"]), "(0, 1)")
