"""`sparsesweep fanin` over a trial's checkpoints: row weights and BN scale against fan-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from sparseopt.checkpoint import save_checkpoint
from sweeps.cli.fanin import register

RAY_CHECKPOINTS = ("checkpoint_2026-01-01_00-00-00.000000", "checkpoint_2026-01-01_00-01-00.000000")


def assert_bad_input(result, *fragments: str) -> None:
    """Exit 2, no traceback, and every fragment in the (unwrapped) message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    output = " ".join(result.output.split())  # rich wraps long messages
    for fragment in fragments:
        assert fragment in output, output


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    application.command("noop")(lambda: None)  # a second command keeps `fanin` a subcommand
    return application


def payload(epoch: int, scale: float) -> dict:
    """A checkpoint of a 6-row layer "a" (k = 1, 3, 2, 3, 1, 2; every active weight of a row
    equal) followed by BN "b" (std 2 everywhere), and a classifier "c" with no BN after it."""
    k, values = [1, 3, 2, 3, 1, 2], [2.0, 1.0, 1.0, -3.0, 4.0, 0.5]
    mask = torch.zeros(6, 3, dtype=torch.bool)
    for row, count in enumerate(k):
        mask[row, :count] = True
    weight = torch.where(mask, torch.tensor(values).view(-1, 1) * scale, torch.tensor(0.0))
    classifier = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    model = {
        "a.weight": weight,
        "a.weight_mask": mask,
        "b.weight": torch.full((6,), 2.0 * scale),
        "b.bias": torch.zeros(6),
        "b.running_mean": torch.zeros(6),
        "b.running_var": torch.full((6,), 4.0 - 1e-5),
        "c.weight": classifier.float(),
        "c.weight_mask": classifier,
    }
    masks = {"a": mask, "c": classifier}
    return {"epoch": epoch, "model": model, "sparse_state": {"masks": masks}}


def ray_trial(directory: Path) -> Path:
    for epoch, name in enumerate(RAY_CHECKPOINTS, start=1):
        save_checkpoint(directory / name, payload(epoch, scale=float(epoch)))
    return directory


def test_checkpoint_json_has_each_layers_history_over_a_ray_trials_checkpoints(app, tmp_path):
    trial = ray_trial(tmp_path / "trial-abc")
    result = CliRunner().invoke(app, ["fanin", "--checkpoint", str(trial), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["layer"]: row for row in json.loads(result.stdout)}
    assert rows["a"]["mean_k"] == 2.0
    first, second = rows["a"]["history"]
    assert (first["epoch"], second["epoch"], first["bn"]) == (1, 2, "b")
    assert (first["k_low"], first["k_high"]) == (1.0, 3.0)
    assert (first["w_abs_low"], first["w_abs_high"]) == (3.0, 2.0)
    assert (second["w_abs_low"], second["w_abs_high"]) == (6.0, 4.0)
    assert first["bn_scale_low"] == pytest.approx(1.0) and second["bn_scale_high"] == pytest.approx(
        2.0
    )
    assert first["corr_bn_scale_k"] is None  # |gamma| / std is the same on every channel
    assert [entry["bn"] for entry in rows["c"]["history"]] == [None, None]


def test_plain_checkpoint_directory_and_table(app, tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path / "run", payload(epoch, scale=float(epoch)), keep=3)
    runner = CliRunner()
    result = runner.invoke(app, ["fanin", "--checkpoint", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    (history_a, _) = [row["history"] for row in json.loads(result.stdout)]
    assert [entry["w_abs_high"] for entry in history_a] == [2.0, 4.0, 6.0]
    table = runner.invoke(
        app, ["fanin", "--checkpoint", str(tmp_path / "run")], env={"COLUMNS": "250"}
    )
    assert table.exit_code == 0, table.output
    assert "row weights and BN scale vs fan-in" in table.output
    assert "|γ|/σ low" in table.output


def test_a_corrupted_checkpoint_is_skipped_with_a_note(app, tmp_path):
    trial = ray_trial(tmp_path / "trial-abc")
    newest = next((trial / RAY_CHECKPOINTS[1]).glob("ckpt-*.pt"))
    newest.write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["fanin", "--checkpoint", str(trial), "--json"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and newest.name in result.stderr
    rows = json.loads(result.stdout)
    assert [entry["epoch"] for entry in rows[0]["history"]] == [1]


def test_runs_lines_carry_the_history(app, tmp_path):
    ray_trial(tmp_path / "train_runs" / "trial-abc123")
    result = CliRunner().invoke(app, ["fanin", "--runs", str(tmp_path / "train_runs")])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    parsed = json.loads(line)
    assert parsed["config_hash"] == "abc123"
    assert [len(layer["history"]) for layer in parsed["layers"]] == [2, 2]


def test_bad_input_names_the_flag_and_the_file(app, tmp_path):
    runner = CliRunner()
    missing = tmp_path / "nope"
    assert_bad_input(
        runner.invoke(app, ["fanin", "--checkpoint", str(missing)]), "--checkpoint", str(missing)
    )
    save_checkpoint(tmp_path / "dense", {"epoch": 1, "sparse_state": None})
    assert_bad_input(
        runner.invoke(app, ["fanin", "--checkpoint", str(tmp_path / "dense")]),
        f"--checkpoint {tmp_path / 'dense'}",
        "no sparse masks",
    )
    broken = tmp_path / "broken" / "ckpt-000001.pt"
    broken.parent.mkdir()
    broken.write_bytes(b"garbage")
    assert_bad_input(
        runner.invoke(app, ["fanin", "--checkpoint", str(broken.parent)]),
        f"--checkpoint {broken.parent}",
        "no loadable checkpoint",
    )
    assert_bad_input(runner.invoke(app, ["fanin", "--runs", str(missing)]), f"--runs {missing}")


def test_the_newest_checkpoints_row_trace_is_in_the_json_by_layer_and_row(app, tmp_path):
    """A run with sparse.trace_rows stores each update's per-row norms and counts; --json and
    --runs carry them under "row_trace", rows by index (layer "c" was not traced)."""
    trace = {
        "steps": torch.tensor([4, 8]),
        "layers": {
            "a": {
                "norm_before": torch.tensor([[2.0, 1.0, 0.5, 3.0, 4.0, 0.0]] * 2),
                "active_before": torch.tensor([[1, 3, 2, 3, 1, 0]] * 2, dtype=torch.int32),
                "norm_after": torch.tensor([[2.0, 0.5, 0.5, 3.0, 4.0, 0.0]] * 2),
                "active_after": torch.tensor([[2, 2, 2, 3, 1, 0]] * 2, dtype=torch.int32),
            }
        },
    }
    for epoch, name in enumerate(RAY_CHECKPOINTS, start=1):
        checkpoint = payload(epoch, scale=1.0)
        checkpoint["sparse_state"]["row_trace"] = trace if epoch == 2 else None
        save_checkpoint(tmp_path / "train_runs" / "trial-abc" / name, checkpoint)
    trial = tmp_path / "train_runs" / "trial-abc"
    result = CliRunner().invoke(app, ["fanin", "--checkpoint", str(trial), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["layer"]: row for row in json.loads(result.stdout)}
    assert rows["c"]["row_trace"] == []
    first, second = rows["a"]["row_trace"]
    assert (first["step"], second["step"]) == (4, 8)
    assert first["active_before"] == [1, 3, 2, 3, 1, 0] and first["active_after"] == [
        2,
        2,
        2,
        3,
        1,
        0,
    ]
    assert first["norm_after"] == [2.0, 0.5, 0.5, 3.0, 4.0, 0.0]
    runs = CliRunner().invoke(app, ["fanin", "--runs", str(tmp_path / "train_runs")])
    (line,) = runs.stdout.splitlines()
    assert [len(layer["row_trace"]) for layer in json.loads(line)["layers"]] == [2, 0]
