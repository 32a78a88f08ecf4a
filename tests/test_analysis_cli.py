"""`export` and `report` through Typer's CliRunner on a small MLflow store."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from analysis_fixtures import Trial, build_store
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sweeps.cli.analysis import register

TRIALS = [
    Trial("rigl", 0.9, 2, 0, 50.0),
    Trial("rigl+sparseopt", 0.9, 2, 0, 52.0),
    Trial("rigl", 0.9, 2, 1, 51.0),
    Trial("rigl+sparseopt", 0.9, 2, 1, 53.5),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    uri, _ = build_store(root, "sweep", TRIALS)
    MlflowClient(tracking_uri=uri).create_experiment("empty")
    return uri, root


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, list(args), env=env)

    return run


def test_export_writes_both_tables(store, invoke, tmp_path: Path) -> None:
    uri, _ = store
    result = invoke(
        "export", "--experiment", "sweep", "--tracking-uri", uri, "--out", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "exported 4 trials (8 epoch rows)" in result.output
    assert pq.read_table(tmp_path / "trials").num_rows == 4
    assert pq.read_table(tmp_path / "epochs").num_rows == 8


def test_tracking_uri_comes_from_the_environment(store, invoke, tmp_path: Path) -> None:
    uri, _ = store
    result = invoke("export", "-e", "sweep", "-o", str(tmp_path), env={"MLFLOW_TRACKING_URI": uri})
    assert result.exit_code == 0, result.output


def test_default_tracking_uri_is_mlflow_db_in_the_cwd(store, invoke, monkeypatch, tmp_path) -> None:
    _, root = store
    monkeypatch.chdir(root)
    result = invoke("export", "-e", "sweep", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "-e", "sweep", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "no MLflow SQLite database at" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_report_without_mlflow_logging(store, invoke, tmp_path: Path) -> None:
    uri, _ = store
    result = invoke(
        "report", "-e", "sweep", "--tracking-uri", uri, "--out", str(tmp_path), "--no-log-mlflow"
    )
    assert result.exit_code == 0, result.output
    assert "PARTIAL" not in result.output and "logged to MLflow" not in result.output
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert "| 0.9 | rigl+sparseopt | 52.75 ± 1.06" in (tmp_path / "report.md").read_text()


def test_report_primary_option_declares_the_primary_contrasts(
    store, invoke, tmp_path: Path
) -> None:
    uri, _ = store
    args = ("report", "-e", "sweep", "--tracking-uri", uri, "--no-log-mlflow")
    result = invoke(*args, "--out", str(tmp_path), "--primary", "rigl+sparseopt:rigl")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert "Primary contrasts: rigl+sparseopt − rigl (--primary)" in text
    # two seeds: +2.0 and +2.5, pooled over the one cell: +2.25 ± t1 · 0.354 / sqrt(2)
    assert "rigl+sparseopt vs rigl: +2.25 points [-0.93, +5.43] (95% seed-clustered t" in text


def test_report_logs_a_report_run(store, invoke, tmp_path: Path) -> None:
    uri, _ = store
    result = invoke("report", "-e", "sweep", "--tracking-uri", uri, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().split("logged to MLflow run ")[1].split()[0]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["sparsesweep.role"] == "report"
    # the terminal opens on the verdict the report run carries as its description
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("Primary verdict:\n\n- rigl+sparseopt vs rigl: +2.25 points")
    assert " ".join(result.output.split()).startswith(" ".join(note.split()))  # wrapped


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("export", "-e", "nope"), 2, "'nope' not found"),
        (("report", "-e", "nope", "--no-log-mlflow"), 2, "'nope' not found"),
        (("export", "-e", "empty"), 1, "has no trial runs"),
        (("report", "-e", "empty"), 1, "has no trial runs"),
        (("report", "-e", "sweep", "--target", "120"), 2, "target"),
        (("report", "-e", "sweep", "--primary", "rigl"), 2, "write it ARM:BASELINE"),
        (("report", "-e", "sweep", "--primary", "rigl:rigl+bad"), 2, "unknown modifier 'bad'"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    store, invoke, tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    uri, _ = store
    result = invoke(*args, "--tracking-uri", uri, "--out", str(tmp_path))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
