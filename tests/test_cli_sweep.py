"""Sweep CLI on good input: the dry run, `run`'s closing summary, the sweep name given either
way, where `ui` finds its store, and the Ray addresses `--address` accepts.

Bad input (every command, exit code 2, nothing written, Ray never started) is the table in
tests/test_bad_input.py; the dashboard's bind address is in tests/test_security.py.
"""

from __future__ import annotations

import shlex
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from sweep_helpers import ONE_TRIAL_SPEC, sweep_cli_app
from typer.testing import CliRunner

from sweeps.cli import analysis as cli_analysis
from sweeps.cli import run as cli_run
from sweeps.run.status import SweepSummary
from sweeps.spec.load import parse_spec

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


def test_dry_run_prints_the_cell_table_once(app, tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "grid": {**GOOD["grid"], "sparsities": [0.9, 0.95]}})
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    for cell in ("default/rigl/s=0.9/e=1", "default/rigl/s=0.95/e=1"):
        assert result.output.count(cell) == 1, result.output
    assert "┃" not in result.output and "warning" not in result.output
    assert "total: 2 cells, 2 trials" in result.output


def test_dry_run_warns_about_what_a_real_run_would_refuse(app, tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    spec = {
        **GOOD,
        "base": {**GOOD["base"], "data": {"name": "cifar100", "root": str(tmp_path / "none")}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            dict(
                spec,
                storage_path=str(tmp_path / "a-file" / "results"),
                tracking_uri="http://127.0.0.1:9",
            )
        )
    )
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--address", "nonsense"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "warning: --address 'nonsense' is not a Ray address" in output
    assert "warning: tracking_uri: MLflow server http://127.0.0.1:9 is unreachable" in output
    assert f"warning: storage_path: cannot write to {tmp_path / 'a-file' / 'results'}" in output
    assert "warning: base.data.root:" in output and "(on this machine)" in output
    assert sorted(tmp_path.rglob("*")) == before


def test_summary_commands_stay_on_one_line_each(tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-folder-name-" * 6) / "mlflow.db"
    spec = parse_spec(
        {**GOOD, "tracking_uri": f"sqlite:///{deep}", "storage_path": str(deep.parent)}
    )
    summary = SweepSummary(expected=1, statuses=Counter({"finished": 1}))
    result = CliRunner().invoke(summary_app(spec, summary), [])
    lines = result.output.splitlines()
    assert lines[0] == "sweep cli: 1/1 trials ended (1 finished)"
    commands = dict(line.split(": ", 1) for line in lines[1:])
    assert shlex.split(commands["dashboard"]) == [
        "sparsesweep",
        "ui",
        "--tracking-uri",
        spec.tracking_uri,
    ]
    assert shlex.split(commands["status"])[-1] == spec.storage_path
    report = shlex.split(commands["report"])
    assert report[:3] == ["sparsesweep", "report", "cli"] and spec.tracking_uri in report


def summary_app(spec: Any, summary: SweepSummary, mlflow_complete: bool = True) -> typer.Typer:
    """A one-command app printing `run`'s closing summary (as piped output: 80 columns)."""
    application = typer.Typer()
    application.command()(lambda: cli_run._print_summary(spec, summary, mlflow_complete))
    return application


def test_summary_asks_mlflow_for_no_link_while_records_wait(tmp_path: Path) -> None:
    """MLflow down at the end: the summary still prints (no answer link), so the note naming
    the command that writes the waiting records follows it."""
    spec = parse_spec({**GOOD, "tracking_uri": "http://127.0.0.1:9", "storage_path": str(tmp_path)})
    summary = SweepSummary(expected=1, statuses=Counter({"finished": 1}))
    result = CliRunner().invoke(summary_app(spec, summary, mlflow_complete=False), [])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "sweep cli: 1/1 trials ended (1 finished)"
    assert "answer:" not in result.output


@pytest.mark.parametrize(
    "given", [["status", "s1"], ["status", "--experiment", "s1"], ["status", "-e", "s1"]]
)
def test_status_takes_the_name_either_way(app, tmp_path: Path, given: list[str]) -> None:
    spec = parse_spec({**GOOD, "name": "s1", "storage_path": str(tmp_path)})
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "sweep_spec.yaml").write_text(spec.to_yaml())
    result = CliRunner().invoke(app, [*given, "--storage", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0/1 trials ended" in " ".join(result.output.split())


def test_ui_takes_the_store_from_mlflow_tracking_uri(app, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.db"
    result = CliRunner().invoke(app, ["ui"], env={"MLFLOW_TRACKING_URI": f"sqlite:///{missing}"})
    assert result.exit_code == 2
    assert str(missing) in " ".join(result.output.split())
    served = CliRunner().invoke(app, ["ui"], env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert served.exit_code == 2 and "already a server" in served.output


@pytest.mark.timeout(300)  # a hang guard only: the probe's own timeout must end the wait
@pytest.mark.parametrize("command", ["export", "report"])
def test_analysis_against_a_silent_server_fails_on_the_probe_timeout(
    command: str, tmp_path: Path
) -> None:
    application = typer.Typer()
    cli_analysis.register(application)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = CliRunner().invoke(
            application, [command, "sweep", "--out", str(tmp_path / "out"), "--tracking-uri", uri]
        )
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert f"--tracking-uri: MLflow server {uri} is unreachable" in output
    assert "timed out" in output, output  # ended by the probe's timeout, not by an MLflow call
    assert not (tmp_path / "out").exists()


LONG = {
    **ONE_TRIAL_SPEC,
    "grid": {"arms": ["rigl+sparseopt"], "sparsities": [0.95], "budgets": [100], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.164, 0.5]}},
}


def stored(tmp_path: Path, spec_dict: dict) -> Any:
    """A sweep stored under tmp_path/results (its spec; no trials yet), tracked in tmp_path/m.db."""
    spec = parse_spec(
        {
            **spec_dict,
            "storage_path": str(tmp_path / "results"),
            "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
        }
    )
    (tmp_path / "results" / spec.name).mkdir(parents=True)
    (tmp_path / "results" / spec.name / "sweep_spec.yaml").write_text(spec.to_yaml())
    return spec


def test_status_fits_80_columns_with_only_the_statuses_that_occur(app, tmp_path: Path) -> None:
    """A long cell id, an lr trial whose 2 seeds finished (91.0, 91.5: best 91.25 at lr 0.164)
    and one seed of the other lr running: every line within 80 columns, nothing cut."""
    from sweep_helpers import trial_meta

    from contract.outcome import Status
    from sweeps.run.ledger import TrialEntry
    from sweeps.run.trial_index import IndexWriter

    spec = stored(tmp_path, {"name": "wide", **LONG})
    cell = "default/rigl+sparseopt/s=0.95/e=100"
    writer = IndexWriter(str(tmp_path / "results" / "wide"), None)
    for seed, lr_trial, lr, status, value in (
        (0, 0, 0.164, Status.FINISHED, 91.0),
        (1, 0, 0.164, Status.FINISHED, 91.5),
        (0, 1, 0.5, Status.RUNNING, 80.0),
    ):
        meta = trial_meta(
            sweep="wide", cell=cell, arm="rigl+sparseopt", sparsity=0.95, budget=100, seed=seed,
            lr=lr, lr_trial=lr_trial, config_hash=f"h{seed}{lr_trial}",
        )  # fmt: skip
        writer.add(TrialEntry.of(meta, status, {"val_acc1": value}, "val_acc1"))
    writer.flush()
    result = CliRunner().invoke(app, ["status", "wide", "--storage", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    (row,) = [line for line in lines if cell in line]
    assert row.split() == [cell, "2/4", "2", "finished", "91.25", "0.164"]
    at = lines.index(row)
    assert [line.split() for line in lines[at + 1 : at + 3]] == [["1", "running"], ["1", "pending"]]
    assert "…" not in result.output and spec.name == "wide"


def test_every_command_finds_the_sweep_from_storage_tracking_uri_or_spec(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From another folder, `status` and `queries` given only the tracking store (or the spec
    file) find the storage the sweep recorded; `report` given only the storage finds the store."""
    from mlflow.tracking import MlflowClient

    from sweeps.cli import queries as cli_queries
    from sweeps.cli.locate import locate_store
    from sweeps.spec.storage import locate
    from sweeps.tracking.experiment import experiment_tags, tag_experiment

    spec = stored(tmp_path, {"name": "found", **ONE_TRIAL_SPEC})
    location = locate(spec)
    tag_experiment(
        spec.tracking_uri, spec.name, location.artifact_location,
        experiment_tags(spec, location.outbox_dir),
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec_yaml = tmp_path / "found.yaml"
    spec_yaml.write_text(spec.to_yaml())
    cli_queries.register(app)
    for given in (["--tracking-uri", spec.tracking_uri], ["--spec", str(spec_yaml)]):
        status = CliRunner().invoke(app, ["status", "found", *given])
        assert status.exit_code == 0, status.output
        assert "0/1 trials ended" in " ".join(status.output.split())
        queries = CliRunner().invoke(app, ["queries", "found", *given])
        assert queries.exit_code == 0, queries.output
        experiment_id = (
            MlflowClient(spec.tracking_uri).get_experiment_by_name("found").experiment_id
        )
        assert (
            f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in queries.output
        )
    storage = str(tmp_path / "results")
    assert locate_store("found", None, storage, None, None) == ("found", spec.tracking_uri)
    assert locate_store("found", None, None, None, spec_yaml) == ("found", spec.tracking_uri)
    missing = CliRunner().invoke(app, ["status", "found"])  # ./sweep_results holds nothing here
    assert missing.exit_code == 2
    assert "allowed: --storage PATH, --tracking-uri URI or --spec FILE" in missing.output
    experiment = MlflowClient(spec.tracking_uri).get_experiment_by_name("found")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["sparsesweep.spec_file"] == location.spec_file


def test_help_wraps_to_the_terminal_without_type_noise_on_flags() -> None:
    from sweeps.cli import app as sparsesweep

    result = CliRunner().invoke(sparsesweep, ["run", "--help"])
    assert result.exit_code == 0, result.output
    assert "--dry-run" in result.output and "<bool>" not in result.output
    assert "╭" not in result.output  # plain help: every line copyable
