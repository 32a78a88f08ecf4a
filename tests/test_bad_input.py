"""Bad input, table-driven: every row fails before Ray starts, exit code 2, a message naming the
field or file and what is allowed, and not one byte of the working directory changed.

The working directory of each row holds a spec, an existing sweep (`results/existing/`, its
stored spec) and an MLflow store with its experiment, so the resume / spec-changed / unknown
experiment rows run against real state. Rows drive the real `sparsesweep` app in-process.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from mlflow_store import empty_store
from typer.testing import CliRunner

from sparseopt.config import set_dotted
from sweeps.cli import app
from sweeps.spec.load import load_spec
from sweeps.spec.storage import SPEC_FILE

EXISTING = "existing"
GOOD: dict[str, Any] = {
    "name": "fresh",
    "storage_path": "results",
    "tracking_uri": "sqlite:///mlflow.db",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [1], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.1]}},
}

Setup = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Row:
    """One invalid input: how to build it in the working dir, and what the message must say."""

    id: str
    setup: Setup
    needles: tuple[str, ...]
    code: int = 2


def spec_with(changes: dict[str, Any]) -> dict[str, Any]:
    """GOOD with dotted-key replacements."""
    spec = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        set_dotted(spec, dotted, value)
    return spec


def run(changes: dict[str, Any] | None = None, *extra: str) -> Setup:
    """`sparsesweep run spec.yaml [extra...]` on GOOD with `changes`."""

    def setup(work: Path) -> list[str]:
        (work / "spec.yaml").write_text(yaml.safe_dump(spec_with(changes or {})))
        return ["run", "spec.yaml", "--no-progress", *extra]

    return setup


def run_text(text: str) -> Setup:
    """`sparsesweep run spec.yaml` on a spec file with this exact text."""

    def setup(work: Path) -> list[str]:
        (work / "spec.yaml").write_text(text)
        return ["run", "spec.yaml", "--no-progress"]

    return setup


def command(*args: str) -> Setup:
    """A fixed command line; `{work}` in an argument becomes the working directory."""
    return lambda work: [arg.replace("{work}", str(work)) for arg in args]


def train_config(text: str, *extra: str) -> Setup:
    """`sparsesweep train --config cfg.yaml [extra...]` with a config file of this text."""

    def setup(work: Path) -> list[str]:
        (work / "cfg.yaml").write_text(text)
        return ["train", "--config", "cfg.yaml", "--quiet", *extra]

    return setup


def closed_port_address(work: Path) -> list[str]:
    """`--address` at a local port nothing listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return run(None, "--address", f"127.0.0.1:{port}")(work)


def stored_under_other_versions(work: Path) -> list[str]:
    """The existing sweep's stored spec says it ran under other ray and optuna versions."""
    stored = work / "results" / EXISTING / SPEC_FILE
    payload = yaml.safe_load(stored.read_text())
    payload["versions"] = {"ray": "2.0.0", "mlflow": "3.17.2", "optuna": "3.0.0", "torch": "2.14.1"}
    stored.write_text(yaml.safe_dump(payload))
    return run({"name": EXISTING})(work)


def broken_stored_spec(work: Path) -> list[str]:
    """A second sweep whose stored spec was edited by hand into an invalid one."""
    stored = work / "results" / "broken" / SPEC_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text(yaml.safe_dump(spec_with({"name": "broken", "grid.budgets": [0]})))
    return ["status", "broken", "--storage", "results"]


INT_RANGE_BUDGET = "an integer in [1, 10000]"
RANGE_SPARSITY = "a number in (0, 1)"

ROWS: list[Row] = [
    # --- spec fields: types, ranges, names
    Row("name_not_string", run({"name": 123}), ("name:", "allowed: a string")),
    Row("name_bad_chars", run({"name": "my sweep"}), ("name:", "letters, digits, '_', '.'")),
    Row(
        "sparsity_above_1", run({"grid.sparsities": [1.5]}), ("grid.sparsities[0]", RANGE_SPARSITY)
    ),
    Row("sparsity_zero", run({"grid.sparsities": [0.0]}), ("grid.sparsities[0]", RANGE_SPARSITY)),
    Row(
        "sparsity_not_number",
        run({"grid.sparsities": ["high"]}),
        ("grid.sparsities[0]", RANGE_SPARSITY),
    ),
    Row(
        "unknown_method",
        run({"grid.arms": ["magic"]}),
        ("grid.arms[0]", "allowed methods: dense, static, set, rigl"),
    ),
    Row(
        "unknown_modifier",
        run({"grid.arms": ["rigl+turbo"]}),
        (
            "grid.arms[0]",
            "allowed modifiers: sparseopt, corrected, cap, normonly, wdscale, ham, renorm, clip",
        ),
    ),
    Row("empty_arms", run({"grid.arms": []}), ("grid.arms", "allowed: a non-empty list")),
    Row("empty_budgets", run({"grid.budgets": []}), ("grid.budgets", "a non-empty list")),
    Row("empty_seeds", run({"grid.seeds": []}), ("grid.seeds", "a non-empty list")),
    Row("budget_zero", run({"grid.budgets": [0]}), ("grid.budgets[0]", INT_RANGE_BUDGET)),
    Row("budget_negative", run({"grid.budgets": [-3]}), ("grid.budgets[0]", INT_RANGE_BUDGET)),
    Row("budget_fraction", run({"grid.budgets": [1.5]}), ("grid.budgets[0]", INT_RANGE_BUDGET)),
    Row("budget_text", run({"grid.budgets": ["ten"]}), ("grid.budgets[0]", INT_RANGE_BUDGET)),
    Row("budget_too_long", run({"grid.budgets": [10**6]}), ("grid.budgets[0]", INT_RANGE_BUDGET)),
    Row(
        "seeds_duplicated",
        run({"grid.seeds": [0, 0]}),
        ("grid.seeds[1]", "duplicates [0]", "each value must appear once"),
    ),
    Row("seed_negative", run({"grid.seeds": [-1]}), ("grid.seeds[0]", "an integer >= 0")),
    Row(
        "budget_boolean",
        run({"grid.budgets": [True]}),
        ("grid.budgets[0]", "true is a boolean, not a number", INT_RANGE_BUDGET),
    ),
    Row(
        "seed_boolean",
        run({"grid.seeds": [False]}),
        ("grid.seeds[0]", "false is a boolean", "an integer >= 0"),
    ),
    Row(
        "sparsity_boolean",
        run({"grid.sparsities": [True]}),
        ("grid.sparsities[0]", "true is a boolean", RANGE_SPARSITY),
    ),
    Row(
        "sparsity_leaves_every_layer_empty",
        run({"base.model": {"name": "small_cnn"}, "grid.sparsities": [0.99999]}),
        (
            "grid.sparsities[0]: 0.99999 leaves no weight in any of the 4 layers of small_cnn",
            "allowed: a sparsity <= 0.9997",
        ),
    ),
    Row(
        "sparsity_leaves_a_layer_empty",
        run({"base.model": {"name": "small_cnn"}, "grid.sparsities": [0.9, 0.9999]}),
        ("grid.sparsities[1]: 0.9999 leaves no weight in layer '0'", "a sparsity <= 0.9997"),
    ),
    Row(
        "model_the_data_cannot_feed",
        run({"base.model": {"name": "resnet50"}, "grid.arms": ["dense"]}),
        ("base.model.name", "needs 3 input channels"),
    ),
    Row(
        "cells_duplicated",
        run({"grid.arms": ["rigl", "rigl"]}),
        ("grid.arms[1]", "duplicates [0]", "each value must appear once"),
    ),
    Row(
        "lr_low_ge_high",
        run({"search.lr": {"low": 0.5, "high": 0.1}}),
        ("search.lr", "low (0.5) must be < high (0.1)"),
    ),
    Row("lr_above_max", run({"search.lr": {"grid": [20]}}), ("search.lr.grid[0]", "(0.0, 10.0]")),
    Row(
        "lr_grid_nan",
        run({"search.lr": {"grid": [0.1, float("nan")]}}),
        ("search.lr.grid[1]: must be in (0.0, 10.0], got nan",),
    ),
    Row(
        "lr_range_nan",
        run({"search.lr": {"low": float("nan"), "high": 0.1}, "search.trials_per_cell": 2}),
        ("search.lr.low: must be in (0.0, 10.0], got nan",),
    ),
    Row(
        "lr_grid_infinite",
        run({"search.lr": {"grid": [float("inf")]}}),
        ("search.lr.grid[0]: must be in (0.0, 10.0], got inf",),
    ),
    Row(
        "lr_low_zero",
        run({"search.lr": {"low": 0.0, "high": 0.1, "log": True}, "search.trials_per_cell": 2}),
        ("search.lr.low", "(0.0, 10.0]"),
    ),
    Row(
        "trials_per_cell_zero",
        run({"search.trials_per_cell": 0}),
        ("search.trials_per_cell", "an integer >= 1"),
    ),
    Row(
        "range_without_trials_per_cell",
        run({"search.lr": {"low": 0.01, "high": 0.1}}),
        ("search.trials_per_cell", "required (an integer >= 1)"),
    ),
    Row(
        "unknown_sampler",
        run({"search.sampler": "random"}),
        ("search.sampler", "allowed keys: lr, weight_decay, trials_per_cell, sampler_seed, metric"),
    ),
    Row(
        "unknown_metric", run({"search.metric": "acc"}), ("search.metric", "'val_acc1', 'val_acc5'")
    ),
    Row(
        "unknown_dataset",
        run({"base.data.name": "mnist"}),
        ("base.data.name", "'digits', 'synthetic', 'cifar100' or 'imagenet'"),
    ),
    Row(
        "unknown_model",
        run({"base.model.name": "vgg"}),
        ("base.model.name", "'resnet20', 'resnet50', 'mlp' or 'small_cnn'"),
    ),
    Row(
        "cifar100_root_missing",
        run({"base.data": {"name": "cifar100", "root": "no-cifar", "download": False}}),
        ("base.data.root", "no-cifar does not exist", "data.download=true"),
    ),
    Row(
        "imagenet_root_missing",
        run({"base.data": {"name": "imagenet", "root": "/nonexistent/imagenet"}}),
        ("base.data.root", "/nonexistent/imagenet", "train/<class>/ and val/<class>/"),
    ),
    Row(
        "workload_root_missing",
        run({"workloads": {"c100": {"data.name": "cifar100", "data.root": "nowhere"}}}),
        ("workloads.c100.data.root", "nowhere does not exist"),
    ),
    Row(
        "cifar100_without_root",
        run({"base.data": {"name": "cifar100"}}),
        ("base.data", "data.root is required"),
    ),
    Row(
        "warmup_exceeds_budget",
        run({"base.schedule.warmup_epochs": 3}),
        ("base.schedule.warmup_epochs", "grid.budgets[0] = 1", "lower the warmup"),
    ),
    Row(
        "val_metric_without_validation_split",
        run({"base.data.val_fraction": 0}),
        ("base.data.val_fraction", "search.metric is 'val_acc1'", "allowed: a val_fraction"),
    ),
    Row(
        "workload_sets_grid_field",
        run({"workloads": {"w": {"epochs": 3}}}),
        ("workloads.w.epochs", "may not set any of: epochs, seed"),
    ),
    Row(
        "set_base_lr_the_search_sets",
        run(None, "--set", "base.optim.lr=0.05"),
        ("base.optim.lr: search.lr sets optim.lr for every trial", "allowed: leave it out"),
    ),
    Row(
        "set_base_epochs_the_budgets_set",
        run(None, "--set", "base.epochs=abc"),
        ("base.epochs: grid.budgets sets epochs", "base may not set any of: epochs, seed"),
    ),
    Row(
        "base_sets_what_an_arm_sets",
        run({"base.sparse.preconditioner": "sparseopt"}),
        ("base.sparse.preconditioner: the arm (grid.arms) sets", "leave it out"),
    ),
    Row(
        "base_sets_searched_weight_decay",
        run({"base.optim.weight_decay": 0.01, "search.weight_decay": {"grid": [0.001]}}),
        ("base.optim.weight_decay: search.weight_decay sets optim.weight_decay",),
    ),
    Row(
        "second_stage_reuses_seed",
        run({"second_stage": {"seeds": [1]}}),
        ("second_stage.seeds[0]", "must be fresh"),
    ),
    Row(
        "ham_not_mapping",
        run({"base.sparse.ham": 3}),
        ("base.sparse.ham", "a mapping with keys alpha, beta"),
    ),
    # --- resources
    Row(
        "cpus_negative",
        run({"resources": {"cpus_per_worker": -1}}),
        ("resources.cpus_per_worker", "a number >= 0"),
    ),
    Row(
        "resources_zero",
        run({"resources": {"cpus_per_worker": 0, "gpus_per_worker": 0}}),
        ("resources", "allowed: cpus_per_worker > 0"),
    ),
    Row(
        "workers_fractional",
        run({"resources": {"workers_per_trial": 1.5}}),
        ("resources.workers_per_trial", "an integer >= 1"),
    ),
    Row(
        "workers_zero",
        run({"resources": {"workers_per_trial": 0}}),
        ("resources.workers_per_trial", "an integer >= 1"),
    ),
    Row(
        "max_concurrent_zero",
        run({"resources": {"max_concurrent_trials": 0}}),
        ("resources.max_concurrent_trials", "an integer >= 1"),
    ),
    Row(
        "gpus_fraction_above_1",
        run({"resources": {"gpus_per_worker": 1.5}}),
        ("resources", "gpus_per_worker 1.5", "a number in [0, 1) or an integer"),
    ),
    # --- the spec file itself
    Row("missing_spec_file", command("run", "absent.yaml"), ("absent.yaml", "bundled specs: ")),
    Row("yaml_syntax_error", run_text("name: x\ngrid: [a\n  b: c\n"), ("spec.yaml", "line 3")),
    Row("yaml_not_mapping", run_text("- a\n- b\n"), ("spec.yaml", "expected a mapping")),
    Row("yaml_empty", run_text(""), ("name: Field required", "allowed: a string")),
    Row(
        "unknown_top_level_key",
        run({"colour": "red"}),
        ("colour", "allowed keys: name, storage_path, tracking_uri, base, workloads, grid"),
    ),
    # --- --set overrides
    Row(
        "set_unknown_key",
        run(None, "--set", "grid.colour=red"),
        ("grid.colour", "allowed keys: arms, sparsities, budgets, seeds"),
    ),
    Row(
        "set_bad_value",
        run(None, "--set", "grid.seeds=[a]"),
        ("grid.seeds[0]", "an integer >= 0"),
    ),
    Row(
        "set_without_equals", run(None, "--set", "grid.seeds"), ("--set 'grid.seeds'", "KEY=VALUE")
    ),
    Row(
        "set_bad_yaml",
        run(None, "--set", "grid.seeds=[0,"),
        ("--set 'grid.seeds=[0,'", "not valid YAML", "allowed: a YAML scalar, list or mapping"),
    ),
    Row(
        "set_below_a_value",
        run(None, "--set", "name.x=1"),
        ("--set 'name.x=1'", "'name' holds a value", "set 'name' itself"),
    ),
    # --- where things live
    Row(
        "tracking_unknown_scheme",
        run({"tracking_uri": "ftp://host/mlflow"}),
        ("tracking_uri", "unsupported scheme 'ftp'", "sqlite:///PATH, file:///PATH, http(s)://"),
    ),
    Row(
        "tracking_server_unreachable",
        run({"tracking_uri": "http://127.0.0.1:9"}),
        ("tracking_uri", "http://127.0.0.1:9 is unreachable", "point tracking_uri at a running"),
    ),
    Row(
        "storage_under_a_file",
        run({"storage_path": "spec.yaml/results"}),
        ("storage_path", "spec.yaml/results", "choose a writable directory"),
    ),
    Row(
        "address_malformed",
        run(None, "--address", "nonsense"),
        ("--address 'nonsense'", "HOST:PORT", "ray://HOST:PORT"),
    ),
    Row("address_unreachable", closed_port_address, ("--address 127.0.0.1:", "nothing answers")),
    # --- existing sweeps: resume, status, a changed spec
    Row(
        "resume_unknown_sweep",
        command("resume", "nosuch", "--storage", "results", "--no-progress"),
        ("'nosuch'", "known sweeps: existing"),
    ),
    Row(
        "status_unknown_sweep",
        command("status", "nosuch", "--storage", "results"),
        ("'nosuch'", "known sweeps: existing"),
    ),
    Row(
        "spec_changed_setting",
        run({"name": EXISTING, "base.optim": {"momentum": 0.5}}),
        (f"{EXISTING}/{SPEC_FILE}", "optim.momentum 0.9 -> 0.5", "extends the sweep"),
    ),
    Row(
        "spec_changed_removed_seed",
        run({"name": EXISTING, "grid.seeds": [0]}),
        (f"{EXISTING}/{SPEC_FILE}", "grid.seeds: removed [1]", "--set name="),
    ),
    Row(
        "resume_under_other_ray_and_optuna",
        stored_under_other_versions,
        ("ran under ray 2.0.0, optuna 3.0.0", "this machine has ray ", "--allow-version-change"),
    ),
    Row(
        "status_named_twice",
        command("status", EXISTING, "--experiment", "other", "--storage", "results"),
        ("named twice", f"NAME '{EXISTING}'", "--experiment 'other'"),
    ),
    Row(
        "status_without_name",
        command("status", "--storage", "results"),
        ("missing the sweep's name", "allowed: NAME or --experiment NAME"),
    ),
    Row(
        "resume_by_experiment_unknown",
        command("resume", "--experiment", "nosuch", "--storage", "results", "--no-progress"),
        ("'nosuch'", "known sweeps: existing"),
    ),
    Row(
        "stored_spec_invalid",
        broken_stored_spec,
        (f"broken/{SPEC_FILE}", "does not validate", "grid.budgets[0]", INT_RANGE_BUDGET),
    ),
    # --- dashboard
    Row(
        "ui_missing_db",
        command("ui", "--tracking-uri", "sqlite:///{work}/none.db"),
        ("--tracking-uri", "none.db", "allowed: the tracking_uri of a sweep that has run"),
    ),
    Row(
        "ui_server_uri",
        command("ui", "--tracking-uri", "http://127.0.0.1:5000"),
        ("--tracking-uri", "already a server", "sqlite:///PATH"),
    ),
    Row("ui_port_zero", command("ui", "--port", "0"), ("--port 0", "an integer in [1, 65535]")),
    Row("ui_port_text", command("ui", "--port", "abc"), ("'--port'", "valid integer")),
    Row("ui_workers_zero", command("ui", "--workers", "0"), ("--workers 0", "an integer >= 1")),
    Row(
        "ui_allowed_hosts_with_port",
        command("ui", "--allowed-hosts", "mlflow.example.org:5000"),
        ("--allowed-hosts: 'mlflow.example.org:5000'", "without a port"),
    ),
    Row(
        "ui_allowed_hosts_everything",
        command("ui", "--allowed-hosts", "*"),
        ("--allowed-hosts: '*'", "wildcards of a name (*.example.org)"),
    ),
    Row(
        "ui_host_invalid",
        command("ui", "--host", "not a host"),
        ("--host 'not a host'", "IP address or host name"),
    ),
    # --- analysis
    Row(
        "export_unknown_experiment",
        command("export", "--experiment", "nope", "--out", "out"),
        ("'nope' not found", "experiments there:", EXISTING),
    ),
    Row(
        "report_unknown_experiment",
        command("report", "--experiment", "nope", "--out", "out", "--no-log-mlflow"),
        ("'nope' not found", "experiments there:", EXISTING),
    ),
    Row(
        "export_unknown_experiment_positional",
        command("export", "nope", "--out", "out"),
        ("'nope' not found", "experiments there:", EXISTING),
    ),
    Row(
        "report_without_name",
        command("report", "--out", "out"),
        ("missing the sweep's name", "NAME or --experiment NAME"),
    ),
    Row(
        "export_unreachable_server",
        command("export", "-e", EXISTING, "--out", "out", "--tracking-uri", "http://127.0.0.1:9"),
        ("--tracking-uri: MLflow server http://127.0.0.1:9 is unreachable",),
    ),
    Row(
        "report_unreachable_server",
        command("report", EXISTING, "--out", "out", "--tracking-uri", "http://127.0.0.1:9"),
        ("--tracking-uri: MLflow server http://127.0.0.1:9 is unreachable",),
    ),
    Row(
        "export_missing_store",
        command("export", "-e", EXISTING, "--out", "out", "--tracking-uri", "sqlite:///none.db"),
        ("none.db", "--tracking-uri"),
    ),
    Row(
        "export_unknown_scheme",
        command("export", "-e", EXISTING, "--out", "out", "--tracking-uri", "ftp://x/y"),
        ("--tracking-uri: unsupported scheme 'ftp' in 'ftp://x/y'", "allowed: sqlite:///PATH"),
    ),
    Row(
        "report_target_out_of_range",
        command("report", "-e", EXISTING, "--out", "out", "--target", "150"),
        ("--target 150", "[0, 100]"),
    ),
    # --- single runs
    Row(
        "train_missing_config",
        command("train", "--config", "nope.yaml"),
        ("nope.yaml", "no such file"),
    ),
    Row("train_yaml_error", train_config("optim: {lr: 0.1\n"), ("cfg.yaml", "line 2")),
    Row("train_not_mapping", train_config("[1, 2]\n"), ("cfg.yaml", "expected a mapping")),
    Row(
        "train_lr_negative",
        train_config("optim: {lr: -1}\n"),
        ("--config cfg.yaml", "optim.lr", "a number in (0, 10]"),
    ),
    Row(
        "train_unknown_key",
        train_config("{}\n", "--set", "optim.foo=1"),
        ("optim.foo", "allowed keys: name, lr, momentum"),
    ),
    Row(
        "train_data_root_missing",
        train_config("data: {name: cifar100, root: no-cifar}\n"),
        ("data.root", "no-cifar does not exist", "data.download=true"),
    ),
    Row(
        "masks_unknown_model",
        command("masks", "--model", "vgg"),
        ("--model", "resnet20, resnet50, mlp, small_cnn"),
    ),
    Row("skew_bad_sparsity", command("skew", "--sparsities", "1.5"), ("--sparsities", "[0, 1)")),
]


def test_table_is_large_and_ids_unique() -> None:
    assert len(ROWS) >= 30
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working dir with an existing sweep (stored spec) and its MLflow experiment."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("template")
    (root / "existing.yaml").write_text(yaml.safe_dump(spec_with({"name": EXISTING})))
    stored = root / "results" / EXISTING / SPEC_FILE
    stored.parent.mkdir(parents=True)
    spec = load_spec(root / "existing.yaml")
    stored.write_text(spec.to_yaml())
    client = MlflowClient(tracking_uri=empty_store(root / "mlflow.db"))
    client.create_experiment(EXISTING, artifact_location=(root / "artifacts").as_uri())
    return root


@pytest.fixture
def ray_starts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of `ray.init` during the test (each fails: Ray may not start for bad input).
    Counted, not read from `ray.is_initialized()`: the session's own Ray may be up."""
    calls: list[dict[str, Any]] = []

    def no_ray(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)
        raise AssertionError("ray.init was called for bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    return calls


@pytest.fixture
def work(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_starts: list) -> Path:
    """A fresh copy of the template as the current directory; Ray may not start."""
    directory = tmp_path / "work"
    shutil.copytree(template, directory)
    monkeypatch.chdir(directory)
    for variable in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    return directory


def snapshot(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every path under `root`: files by (sha256, mtime_ns), directories as None."""
    state: dict[str, tuple[str, int] | None] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_dir():
            state[relative] = None
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[relative] = (digest, path.stat().st_mtime_ns)
    return state


def flat(text: str) -> str:
    """Output with Typer's error-panel borders and all line breaks collapsed to single spaces."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_refused_before_anything_runs(
    row: Row, work: Path, ray_starts: list[dict[str, Any]]
) -> None:
    args = row.setup(work)
    before = snapshot(work)
    assert f"results/{EXISTING}/{SPEC_FILE}" in before and "mlflow.db" in before
    result = CliRunner().invoke(app, args)
    output = flat(result.output)
    assert result.exit_code == row.code, result.output
    assert isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for needle in row.needles:
        assert needle in output, f"{needle!r} not in: {output}"
    assert ray_starts == []
    assert snapshot(work) == before
