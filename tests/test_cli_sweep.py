"""Sweep CLI input errors: exit code 2, a message naming the field or file, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from sweeps import cli_sweep

GOOD = {
    "name": "cli",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [1], "seeds": [0]},
    "search": {"lr": {"grid": [0.1]}},
}


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    cli_sweep.register(application)
    return application


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    spec = dict(
        spec, storage_path=str(tmp_path / "results"), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"grid": dict(GOOD["grid"], sparsities=[1.5])}, "grid.sparsities"),
        ({"grid": dict(GOOD["grid"], arms=["magic"])}, "grid.arms"),
        ({"grid": dict(GOOD["grid"], budgets=[])}, "grid.budgets"),
        ({"search": {"lr": {"low": 0.5, "high": 0.1}}}, "search.lr"),
    ],
)
def test_bad_spec_fails_before_ray(app, tmp_path: Path, change: dict, needle: str) -> None:
    path = write(tmp_path, {**GOOD, **change})
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert needle in result.output
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "m.db").exists()


def test_missing_spec_file(app, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "absent.yaml" in result.output


def test_unreachable_tracking_server_fails_before_ray(app, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["run", str(path), "--set", "tracking_uri=http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "tracking_uri" in result.output
    assert not (tmp_path / "results").exists()


def test_dry_run_prints_cells_and_trial_count(app, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "default/rigl/s=0.9/e=1" in result.output
    assert not (tmp_path / "results").exists()


def test_resume_of_unknown_sweep_names_it(app, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["resume", "nosuch", "--storage", str(tmp_path)])
    assert result.exit_code == 2
    assert "nosuch" in result.output


def test_changed_spec_is_refused_with_a_diff(app, tmp_path: Path) -> None:
    from sweeps.launch import locate
    from sweeps.spec import load_spec
    from sweeps.store import write_text_atomic

    path = write(tmp_path, GOOD)
    old = load_spec(path)
    write_text_atomic(locate(old).spec_file, old.to_yaml())
    before = Path(locate(old).spec_file).read_text()
    result = CliRunner().invoke(app, ["run", str(path), "--set", "base.optim.momentum=0.5"])
    assert result.exit_code == 2
    assert "momentum" in result.output
    assert Path(locate(old).spec_file).read_text() == before


def test_ui_refuses_missing_database(app, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2
    assert "none.db" in result.output
