"""Sweep CLI on good input: the dry run, and the Ray addresses `--address` accepts.

Bad input (every command, exit code 2, nothing written, Ray never started) is the table in
tests/test_bad_input.py; the dashboard's bind address is in tests/test_security.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
import yaml
from sweep_helpers import ONE_TRIAL_SPEC, sweep_cli_app
from typer.testing import CliRunner

from sweeps import cli_run

GOOD = {"name": "cli", **ONE_TRIAL_SPEC}


@pytest.fixture
def app() -> typer.Typer:
    return sweep_cli_app()


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    spec = dict(
        spec, storage_path=str(tmp_path / "results"), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    path.write_text(yaml.safe_dump(spec))
    return path


def test_dry_run_prints_cells_and_trial_count(app, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "default/rigl/s=0.9/e=1" in result.output
    assert not (tmp_path / "results").exists()


def test_ray_addresses_that_answer_are_accepted() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for address in (None, "auto", "local", f"127.0.0.1:{port}", f"ray://localhost:{port}"):
            cli_run._check_address(address)
