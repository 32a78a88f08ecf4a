"""Security basics: specs hold no credentials, the environment's secrets never reach MLflow (or
the analysis exports logged to it), and the dashboard binds to loopback unless asked otherwise,
with a warning. (cluster.yaml's open ports: tests/test_cluster_config.py.)"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow_store import empty_store
from recorded_sweep import RecordedSweep, record_sweep
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.spec.load import CONFIGS_DIR, load_spec, parse_spec
from sweeps.spec.messages import SpecError
from sweeps.spec.schema import SweepSpec

SENTINEL = "sentinel-7f3a9c-never-log-me"
SECRET_ENV = {
    "AWS_ACCESS_KEY_ID": f"AKIA{SENTINEL}",
    "AWS_SECRET_ACCESS_KEY": SENTINEL,
    "AWS_SESSION_TOKEN": SENTINEL,
    "MLFLOW_TRACKING_USERNAME": SENTINEL,
    "MLFLOW_TRACKING_PASSWORD": SENTINEL,
    "MLFLOW_TRACKING_TOKEN": SENTINEL,
    "MLFLOW_TRACKING_URI": f"http://user:{SENTINEL}@127.0.0.1:9",
}
SPEC: dict[str, Any] = {
    "name": "secure",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.1]}},
}


def with_changes(changes: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return spec


CREDENTIALS = [
    (
        "storage_uri_with_password",
        {"storage_path": "s3://AKID:secret@bucket/sweeps"},
        "storage_path",
    ),
    ("tracking_uri_with_password", {"tracking_uri": "http://admin:pw@mlflow:5000"}, "tracking_uri"),
    ("tracking_uri_with_token", {"tracking_uri": "https://tok123@mlflow.example"}, "tracking_uri"),
    ("aws_secret_key", {"aws_secret_access_key": "abc"}, "aws_secret_access_key"),
    ("password_in_base", {"base.data.password": "abc"}, "base.data.password"),
    (
        "token_in_workload",
        {"workloads": {"w": {"data": {"token": "abc"}}}},
        "workloads.w.data.token",
    ),
    ("api_key_in_search", {"search.api_key": "abc"}, "search.api_key"),
    ("aws_key_id_as_value", {"base.data.root": "/x/AKIAIOSFODNN7EXAMPLE"}, "base.data.root"),
]


@pytest.mark.parametrize(
    ("changes", "path"), [c[1:] for c in CREDENTIALS], ids=[c[0] for c in CREDENTIALS]
)
def test_credentials_in_a_spec_are_refused(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(with_changes(changes))
    message = str(caught.value)
    assert f"{path}: looks like a credential" in message
    assert "through the environment" in message and "AWS_SECRET_ACCESS_KEY" in message


@pytest.mark.parametrize(
    "changes",
    [
        {"storage_path": "s3://bucket/sweeps"},
        {"tracking_uri": "http://127.0.0.1:5000"},
        {"tracking_uri": "sqlite:////data/mlflow.db"},
    ],
)
def test_plain_locations_are_accepted(changes: dict[str, Any]) -> None:
    assert parse_spec(with_changes(changes)).name == "secure"


@pytest.mark.parametrize("name", sorted(path.stem for path in CONFIGS_DIR.glob("*.yaml")))
def test_bundled_specs_hold_no_credentials(name: str) -> None:
    assert load_spec(name).name == name


def test_cli_refuses_a_credential_override_before_writing(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(with_changes({"storage_path": str(tmp_path / "out")})))
    result = CliRunner().invoke(
        app, ["run", str(spec_path), "--set", "tracking_uri=http://u:pw@127.0.0.1:5000"]
    )
    assert result.exit_code == 2, result.output
    assert "tracking_uri: looks like a credential" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spec.yaml"]


@dataclass(frozen=True)
class SecretStore:
    """A sweep recorded while the environment held secrets."""

    root: Path
    spec: SweepSpec
    recorded: RecordedSweep


@pytest.fixture(scope="module")
def secret_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretStore]:
    root = tmp_path_factory.mktemp("secure")
    spec = parse_spec(
        with_changes(
            {"storage_path": str(root / "results"), "tracking_uri": empty_store(root / "m.db")}
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRET_ENV.items():
            patch.setenv(name, value)
        recorded = record_sweep(spec, lambda number, epoch: 50.0 + epoch + number)
        yield SecretStore(root, spec, recorded)


def files_under(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_environment_secrets_never_reach_mlflow(secret_store: SecretStore, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(secret_store.spec.tracking_uri)
    experiment = client.get_experiment(secret_store.recorded.experiment_id)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + 2 + 1  # the cell, its two seeds and the arm's curve run
    logged: list[str] = [*experiment.tags.values(), experiment.artifact_location]
    for run in runs:
        logged += [*run.data.params, *run.data.params.values(), *run.data.tags.values()]
        logged.append(run.info.artifact_uri)
        downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
        logged += [data.decode() for data in files_under(downloaded).values()]
    text = "\n".join(logged)
    assert "optim.lr" in text and "sparse.method" in text  # params were read
    assert "grid:" in text and '"config_hash"' in text  # the spec and trial-config artifacts
    assert SENTINEL not in text

    stored = files_under(secret_store.root)
    assert any(secret_store.recorded.config_hashes[0].encode() in data for data in stored.values())
    leaking = [str(path) for path, data in stored.items() if SENTINEL.encode() in data]
    assert leaking == []


def test_export_masks_tracking_uri_credentials(
    secret_store: SecretStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An analysis export against `http://user:password@host` writes (and so logs) no password."""
    import analysis.export
    from analysis.fetch import fetch_experiment

    records = fetch_experiment(secret_store.spec.tracking_uri, secret_store.spec.name)
    monkeypatch.setattr(analysis.export, "fetch_experiment", lambda *args, **kwargs: records)
    uri = f"http://user:{SENTINEL}@127.0.0.1:9"
    result = analysis.export.export_experiment(uri, secret_store.spec.name, tmp_path / "out")
    assert result.manifest["tracking_uri"] == "http://***@127.0.0.1:9"
    written = files_under(tmp_path / "out")
    assert any(b"http://***@127.0.0.1:9" in data for data in written.values())
    assert [str(path) for path, data in written.items() if SENTINEL.encode() in data] == []


@pytest.fixture
def server_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict]]:
    """Stand-in for the exec of `mlflow server`: records its argv and environment. The store
    is ./mlflow.db, whatever MLFLOW_TRACKING_URI another fixture left set (`ui` honours it)."""
    calls: list[tuple[list[str], dict]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((list(argv), env)))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").touch()
    monkeypatch.chdir(tmp_path)
    return calls


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_ui_binds_to_loopback_by_default(server_calls: list) -> None:
    result = CliRunner().invoke(app, ["ui", "--port", "5123"])
    assert result.exit_code == 0, result.output
    ((argv, env),) = server_calls
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert (option(argv, "--host"), option(argv, "--port")) == ("127.0.0.1", "5123")
    assert option(argv, "--workers") == "1"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "warning" not in result.output


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("0.0.0.0", True),
        ("10.1.2.3", True),
        ("head.example.org", True),
        ("localhost", False),
        ("::1", False),
    ],
)
def test_ui_warns_when_reachable_beyond_this_machine(
    server_calls: list, host: str, warned: bool
) -> None:
    result = CliRunner().invoke(app, ["ui", "--host", host])
    assert result.exit_code == 0, result.output
    ((argv, _),) = server_calls
    assert option(argv, "--host") == host
    warning = "the server has no authentication"
    assert (warning in " ".join(result.output.split())) is warned


def test_ui_allowed_hosts_extend_mlflows_defaults(server_calls: list) -> None:
    result = CliRunner().invoke(
        app, ["ui", "--host", "0.0.0.0", "--allowed-hosts", "mlflow.example.org,*.corp.example"]
    )
    assert result.exit_code == 0, result.output
    ((argv, _),) = server_calls
    patterns = option(argv, "--allowed-hosts").split(",")
    for pattern in ("mlflow.example.org", "mlflow.example.org:*", "*.corp.example:*"):
        assert pattern in patterns
    for default in ("localhost:*", "127.0.0.1:*", "10.*"):  # MLflow's defaults are kept
        assert default in patterns
    assert "*" not in patterns


def test_ui_without_allowed_hosts_leaves_mlflows_defaults(server_calls: list) -> None:
    assert CliRunner().invoke(app, ["ui"]).exit_code == 0
    ((argv, _),) = server_calls
    assert "--allowed-hosts" not in argv
