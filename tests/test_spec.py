"""Sweep spec: validation messages, cell expansion, resolved configs, spec diffs, dry-run cost."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from contract.arms import parse_arm
from sparseopt.config import DataConfig, ModelConfig, SparseConfig, TrainConfig
from sweeps.spec.cost import EPOCH_COSTS, TRIAL_OVERHEAD_S, estimate_cost
from sweeps.spec.diff import spec_changes_that_alter_existing, spec_diff_text
from sweeps.spec.load import CONFIGS_DIR, load_spec, parse_spec, read_stored_sweep, stored_spec_text
from sweeps.spec.messages import SpecError
from sweeps.spec.model_layers import dead_layers, largest_alive_sparsity, maskable_shapes

BASE: dict[str, Any] = {
    "name": "tiny",
    "base": {
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "small_cnn"},
        "schedule": {"warmup_epochs": 0.5},
    },
    "grid": {
        "arms": ["dense", "rigl", "rigl+sparseopt"],
        "sparsities": [0.9, 0.95],
        "budgets": [2, 4],
        "seeds": [0, 1],
    },
    "search": {"lr": {"low": 0.01, "high": 0.5, "log": True}, "trials_per_cell": 2},
}


def payload(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-key replacements (`None` deletes the key)."""
    result = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return result


INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("bad name", payload(name="my sweep"), ["name", "letters, digits"]),
    ("unknown top-level key", payload(colour="red"), ["colour", "allowed keys: name"]),
    ("unknown key in base", payload(base__data__sise=3), ["base.data.sise", "allowed keys: name"]),
    ("unknown key in base root", payload(base__epoch=3), ["base.epoch", "allowed keys: data"]),
    ("bad base value", payload(base__data__batch_size=0), ["base.data.batch_size"]),
    ("bad base model", payload(base__model__name="vgg"), ["base.model.name", "'resnet20'"]),
    ("unknown key in grid", payload(grid__colour=1), ["grid.colour", "allowed keys: arms"]),
    ("empty arms", payload(grid__arms=[]), ["grid.arms", "at least 1"]),
    ("empty sparsities", payload(grid__sparsities=[]), ["grid.sparsities", "at least 1"]),
    ("empty budgets", payload(grid__budgets=[]), ["grid.budgets", "at least 1"]),
    ("empty seeds", payload(grid__seeds=[]), ["grid.seeds", "at least 1"]),
    ("missing grid", payload(grid=None), ["grid", "Field required"]),
    ("unknown method", payload(grid__arms=["rigl", "snip"]), ["grid.arms[1]", "allowed methods"]),
    (
        "unknown modifier",
        payload(grid__arms=["rigl+turbo"]),
        [
            "grid.arms[0]",
            "allowed modifiers: sparseopt, corrected, cap, normonly, wdscale, ham, renorm, clip",
        ],
    ),
    ("corrected without sparseopt", payload(grid__arms=["rigl+corrected"]), ["grid.arms[0]"]),
    ("corrected on set", payload(grid__arms=["set+sparseopt+corrected"]), ["grid.arms[0]"]),
    (
        "sparseopt on dense",
        payload(grid__arms=["dense+sparseopt"]),
        ["grid.arms[0]", "ham, renorm"],
    ),
    (
        "modifier order",
        payload(grid__arms=["rigl+ham+sparseopt"]),
        ["grid.arms[0]", "rigl+sparseopt+ham"],
    ),
    ("repeated modifier", payload(grid__arms=["rigl+ham+ham"]), ["grid.arms[0]", "repeats"]),
    (
        "duplicated arm",
        payload(grid__arms=["rigl", "set", "rigl"]),
        ["grid.arms[2]", "duplicates [0]"],
    ),
    ("sparsity 1", payload(grid__sparsities=[0.9, 1.0]), ["grid.sparsities[1]", "(0, 1)"]),
    ("sparsity 0", payload(grid__sparsities=[0.0]), ["grid.sparsities[0]", "(0, 1)"]),
    ("duplicated sparsity", payload(grid__sparsities=[0.9, 0.95, 0.9]), ["grid.sparsities[2]"]),
    ("budget 0", payload(grid__budgets=[0, 2]), ["grid.budgets[0]", "[1, 10000]"]),
    ("fractional budget", payload(grid__budgets=[2.5]), ["grid.budgets[0]"]),
    ("duplicated budget", payload(grid__budgets=[2, 2]), ["grid.budgets[1]"]),
    ("negative seed", payload(grid__seeds=[0, -1]), ["grid.seeds[1]", ">= 0"]),
    ("duplicated seed", payload(grid__seeds=[3, 3]), ["grid.seeds[1]", "duplicates [0]"]),
    ("lr low >= high", payload(search__lr={"low": 0.5, "high": 0.1}), ["search.lr", "must be <"]),
    (
        "lr low <= 0",
        payload(search__lr={"low": 0.0, "high": 0.1}),
        ["search.lr.low", "(0.0, 10.0]"],
    ),
    ("lr too high", payload(search__lr={"low": 0.1, "high": 20.0}), ["search.lr.high"]),
    ("lr grid duplicates", payload(search__lr={"grid": [0.1, 0.1]}), ["search.lr.grid[1]"]),
    ("lr grid negative", payload(search__lr={"grid": [0.1, -0.1]}), ["search.lr.grid[1]"]),
    (
        "lr grid and range",
        payload(search__lr={"grid": [0.1], "low": 0.01}),
        ["search.lr", "not both"],
    ),
    ("lr missing high", payload(search__lr={"low": 0.01}), ["search.lr", "{grid: [...]}"]),
    ("lr unknown key", payload(search__lr={"low": 0.01, "high": 1, "base": 2}), ["search.lr.base"]),
    ("trials_per_cell 0", payload(search__trials_per_cell=0), ["search.trials_per_cell"]),
    (
        "trials_per_cell missing",
        payload(search__trials_per_cell=None),
        ["search.trials_per_cell", "required"],
    ),
    (
        "trials_per_cell above grid",
        payload(search__lr={"grid": [0.1, 0.2]}, search__trials_per_cell=3),
        ["search.trials_per_cell", "1..2"],
    ),
    ("unknown metric", payload(search__metric="accuracy"), ["search.metric", "'val_acc1'"]),
    (
        "weight decay above 1",
        payload(search__weight_decay={"low": 0.1, "high": 2.0}),
        ["search.weight_decay.high", "[0.0, 1.0]"],
    ),
    (
        "log weight decay from 0",
        payload(search__weight_decay={"low": 0.0, "high": 0.1, "log": True}),
        ["search.weight_decay.low", "log"],
    ),
    (
        "second stage reuses a seed",
        payload(second_stage={"seeds": [5, 1]}),
        ["second_stage.seeds[1]", "fresh"],
    ),
    ("second stage empty", payload(second_stage={"seeds": []}), ["second_stage.seeds"]),
    (
        "early stopping factor",
        payload(early_stopping={"reduction_factor": 1}),
        ["early_stopping.reduction_factor"],
    ),
    (
        "early stopping key",
        payload(early_stopping={"grace": 1}),
        ["early_stopping.grace", "grace_period"],
    ),
    ("resources key", payload(resources={"gpus": 1}), ["resources.gpus", "gpus_per_worker"]),
    (
        "resources negative",
        payload(resources={"cpus_per_worker": -1}),
        ["resources.cpus_per_worker"],
    ),
    ("workload unknown key", payload(workloads={"w": {"data.nme": "x"}}), ["workloads.w.data.nme"]),
    (
        "workload sets the budget",
        payload(workloads={"w": {"epochs": 3}}),
        ["workloads.w.epochs", "grid"],
    ),
    (
        "workload sets the lr",
        payload(workloads={"w": {"optim": {"lr": 3}}}),
        ["workloads.w.optim.lr"],
    ),
    ("workload bad name", payload(workloads={"a/b": {}}), ["workloads", "'a/b'"]),
    ("no workloads", payload(workloads={}), ["workloads", "at least one"]),
    (
        "workload dataset without root",
        payload(workloads={"c": {"data.name": "cifar100"}}),
        ["workloads.c.data", "data.root is required"],
    ),
    (
        "warmup longer than a budget",
        payload(base__schedule={"warmup_epochs": 2}),
        ["base.schedule.warmup_epochs", "grid.budgets[0]"],
    ),
    ("storage path empty", payload(storage_path=""), ["storage_path"]),
    (
        "no validation split for a val metric",
        payload(base__data={"name": "digits", "val_fraction": 0.0}),
        ["base.data.val_fraction", "search.metric is 'val_acc1'", "test_acc1"],
    ),
    (
        "a workload drops the validation split",
        payload(workloads={"w": {"data.val_fraction": 0}}),
        ["workloads.w.data.val_fraction", "(0, 1)"],
    ),
    (
        "primary contrast names an arm the sweep lacks",
        payload(analysis={"primary": ["rigl+sparseopt:set"]}),
        ["analysis.primary[0]", "set is not an arm", "dense, rigl, rigl+sparseopt"],
    ),
    (
        "primary contrast not ARM:BASELINE",
        payload(analysis={"primary": ["rigl+sparseopt"]}),
        ["analysis", "ARM:BASELINE"],
    ),
    ("empty primary family", payload(analysis={"primary": []}), ["analysis", "omit it"]),
    ("alpha out of range", payload(analysis={"alpha": 1.5}), ["analysis", "alpha", "(0, 1)"]),
    ("alpha a boolean", payload(analysis={"alpha": True}), ["analysis.alpha", "boolean"]),
    ("target above 100", payload(analysis={"target": 120}), ["analysis", "target", "[0, 100]"]),
    ("halfwidth not positive", payload(analysis={"halfwidth": 0}), ["analysis", "halfwidth"]),
    ("unknown analysis key", payload(analysis={"holm": True}), ["analysis.holm", "primary"]),
]


@pytest.mark.parametrize(
    ("payload_", "fragments"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_name_the_field(payload_: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(payload_)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message


def test_invalid_table_is_large() -> None:
    assert len(INVALID) >= 20


def test_valid_base_spec_and_paths(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(BASE)
    assert spec.storage_path == str(tmp_path / "sweep_results")
    assert spec.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    remote = parse_spec(payload(storage_path="s3://bucket/x", tracking_uri="sqlite:////abs/m.db"))
    assert remote.storage_path == "s3://bucket/x"
    assert remote.tracking_uri == "sqlite:////abs/m.db"


def test_cells_dense_dedup_and_ids() -> None:
    spec = parse_spec(BASE)
    ids = [cell.cell_id for cell in spec.cells()]
    assert len(ids) == 2 + 2 * 2 * 2  # dense: one s=0 cell per budget
    assert ids[:3] == ["default/dense/s=0/e=2", "default/dense/s=0/e=4", "default/rigl/s=0.9/e=2"]
    assert "default/rigl+sparseopt/s=0.95/e=4" in ids
    assert len(set(ids)) == len(ids)
    assert spec.expected_trials() == 10 * 2 * 2
    staged = parse_spec(payload(second_stage={"seeds": [7, 8, 9]}))
    assert staged.expected_trials() == 10 * 2 * 2 + 10 * 3


def test_workloads_multiply_cells_and_accept_nested_or_dotted_keys() -> None:
    dotted = parse_spec(payload(workloads={"a": {"model.name": "mlp"}, "b": {}}))
    nested = parse_spec(payload(workloads={"a": {"model": {"name": "mlp"}}, "b": {}}))
    assert len(dotted.cells()) == 20
    a_cell = dotted.cell("a/rigl/s=0.9/e=2")
    assert a_cell.train_config(0, 0.1).model.name == "mlp"
    assert dotted.cell("b/rigl/s=0.9/e=2").train_config(0, 0.1).model.name == "small_cnn"
    assert nested.cell("a/rigl/s=0.9/e=2").train_config(0, 0.1) == a_cell.train_config(0, 0.1)


ARMS = [
    ("dense", "dense", "none", "raw", False, False),
    ("dense+ham+renorm", "dense", "none", "raw", True, True),
    ("static+sparseopt", "static", "sparseopt", "raw", False, False),
    ("set", "set", "none", "raw", False, False),
    ("rigl+sparseopt", "rigl", "sparseopt", "raw", False, False),
    ("rigl+sparseopt+corrected", "rigl", "sparseopt", "corrected", False, False),
    ("set+sparseopt+ham", "set", "sparseopt", "raw", True, False),
    ("rigl+renorm", "rigl", "none", "raw", False, True),
]


@pytest.mark.parametrize(("arm", "method", "precond", "scores", "ham", "renorm"), ARMS)
def test_resolved_train_config_per_arm(
    arm: str, method: str, precond: str, scores: str, ham: bool, renorm: bool
) -> None:
    spec = parse_spec(payload(grid__arms=[arm], grid__sparsities=[0.95], grid__budgets=[3]))
    (cell,) = spec.cells()
    config = cell.train_config(seed=4, lr=0.07, weight_decay=1e-3)
    assert isinstance(config, TrainConfig)
    assert (config.sparse.method, config.sparse.preconditioner) == (method, precond)
    assert config.sparse.regrow_scores == scores
    assert (config.sparse.ham is not None, config.sparse.grad_renorm) == (ham, renorm)
    assert config.sparse.sparsity == (0.0 if method == "dense" else 0.95)
    assert (config.epochs, config.seed, config.optim.lr) == (3, 4, 0.07)
    assert config.optim.weight_decay == 1e-3
    assert config.data.batch_size == 64 and config.model.name == "small_cnn"
    assert cell.train_config(seed=4, lr=0.07).optim.weight_decay == 5e-4  # base default kept


def test_ham_settings_from_base_apply_to_ham_arms_only() -> None:
    spec = parse_spec(
        payload(base__sparse={"ham": {"alpha": 50.0}}, grid__arms=["rigl", "rigl+ham"])
    )
    by_arm = {cell.arm: cell.train_config(0, 0.1) for cell in spec.cells()}
    assert by_arm["rigl+ham"].sparse.ham is not None
    assert by_arm["rigl+ham"].sparse.ham.alpha == 50.0
    assert by_arm["rigl"].sparse.ham is None


def test_parse_arm_modifiers() -> None:
    arm = parse_arm("rigl+sparseopt+corrected+ham")
    assert arm.method == "rigl" and arm.modifiers == {"sparseopt", "corrected", "ham"}
    assert arm.sparse and not parse_arm("dense").sparse


def test_load_spec_overrides_and_bundled_names(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    spec = load_spec(
        path, ["grid.seeds=[0, 1, 2]", "search.lr={grid: [0.1, 0.2]}", "base.data.batch_size=32"]
    )
    assert spec.grid.seeds == [0, 1, 2]
    assert spec.search.sampler == "grid" and spec.search.n_trials == 2
    assert spec.cells()[0].train_config(0, 0.1).data.batch_size == 32
    with pytest.raises(SpecError, match=r"grid\.budgets\[0\]"):
        load_spec(path, ["grid.budgets=[0]"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_spec(path, ["grid.seeds"])
    with pytest.raises(FileNotFoundError, match="quickstart"):
        load_spec(tmp_path / "missing.yaml")


BUNDLED_SPECS = sorted(path.stem for path in CONFIGS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", BUNDLED_SPECS)
def test_bundled_specs_validate(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    assert (CONFIGS_DIR / f"{name}.yaml").exists()
    for cell in spec.cells():
        cell.train_config(spec.grid.seeds[0], spec.search.lr.representative())


def test_quickstart_matches_its_comment() -> None:
    spec = load_spec("quickstart")
    assert len(spec.cells()) == 6
    assert spec.expected_trials() == 24
    assert "24 Tune trials" in (CONFIGS_DIR / "quickstart.yaml").read_text()
    config = spec.cells()[0].train_config(0, 0.1)
    assert (config.data.name, config.model.name) == ("digits", "small_cnn")


@pytest.mark.parametrize(
    ("name", "budgets", "trials"),
    [
        ("paper_cifar100_resnet20", [100, 200, 300, 500], 384),
        ("paper_imagenet_resnet50", [90, 180, 270], 108),
    ],
)
def test_paper_specs_encode_the_papers_grid(name: str, budgets: list[int], trials: int) -> None:
    spec = load_spec(name)
    assert sorted(spec.grid.arms) == ["rigl", "rigl+sparseopt", "set", "set+sparseopt"]
    assert spec.grid.sparsities == [0.9, 0.95, 0.97]
    assert spec.grid.budgets == budgets
    assert spec.expected_trials() == trials
    assert f"= {trials} trials" in (CONFIGS_DIR / f"{name}.yaml").read_text()
    for cell in spec.cells():
        config = cell.train_config(spec.grid.seeds[0], spec.search.lr.representative())
        assert config.schedule.kind == "warmup_cosine" and config.schedule.warmup_epochs == 5
        assert config.epochs == cell.budget and config.sparse.distribution == "erk"
    assert estimate_cost(spec).device_hours["gpu"] > 0


def test_placeholder_roots_are_overridable() -> None:
    spec = load_spec("cifar100_small", ["base.data.root=/data/c100"])
    assert spec.cells()[0].train_config(0, 0.1).data.root == "/data/c100"


# ---- spec diffs ---------------------------------------------------------------------------

EXTENSIONS = [
    payload(grid__arms=["dense", "rigl", "rigl+sparseopt", "set"]),
    payload(grid__sparsities=[0.9, 0.95, 0.97]),
    payload(grid__budgets=[2, 4, 8]),
    payload(grid__seeds=[0, 1, 2]),
    payload(search__trials_per_cell=5),
    payload(workloads={"default": {}, "mlp": {"model.name": "mlp"}}),
    payload(second_stage={"seeds": [10]}),
    payload(resources={"max_concurrent_trials": 4}),
    payload(analysis={"primary": ["rigl+sparseopt:rigl"], "alpha": 0.01}),
    payload(
        base__data={"name": "digits", "batch_size": 64, "augment": True}
    ),  # a default made explicit
]


@pytest.mark.parametrize("new", EXTENSIONS)
def test_extensions_alter_nothing(new: dict[str, Any]) -> None:
    old, extended = parse_spec(BASE), parse_spec(new)
    assert spec_changes_that_alter_existing(old, extended) == []
    text = spec_diff_text(old, extended)
    assert "only extends" in text


ALTERING = [
    (payload(grid__arms=["dense", "rigl"]), "grid.arms: removed ['rigl+sparseopt']"),
    (payload(grid__seeds=[0]), "grid.seeds: removed [1]"),
    (payload(grid__budgets=[4]), "grid.budgets: removed [2]"),
    (payload(search__trials_per_cell=1), "search.trials_per_cell: lowered 2 -> 1"),
    (payload(search__lr={"low": 0.01, "high": 1.0, "log": True}), "search.lr"),
    (payload(search__sampler_seed=3), "search.sampler_seed"),
    (payload(search__metric="val_loss"), "search.metric"),
    (
        payload(base__data={"name": "digits", "batch_size": 32}),
        "data.batch_size 64 -> 32 in 10 of 10",
    ),
    (payload(early_stopping={"grace_period": 1}), "early_stopping"),
    (payload(name="other"), "name"),
    (payload(workloads={"w": {}}), "workloads: removed ['default']"),
]


@pytest.mark.parametrize(("new", "fragment"), ALTERING)
def test_altering_changes_are_listed(new: dict[str, Any], fragment: str) -> None:
    old, changed = parse_spec(BASE), parse_spec(new)
    changes = spec_changes_that_alter_existing(old, changed)
    assert any(fragment in change for change in changes), changes
    assert fragment in spec_diff_text(old, changed)


def test_second_stage_seed_removal_is_listed() -> None:
    old = parse_spec(payload(second_stage={"seeds": [10, 11]}))
    assert spec_changes_that_alter_existing(old, parse_spec(payload(second_stage={"seeds": [10]})))
    assert spec_changes_that_alter_existing(old, parse_spec(BASE)) == ["second_stage: removed"]
    assert spec_diff_text(old, old) == "The specs are identical."


# ---- dry-run cost ---------------------------------------------------------------------------


def test_cost_of_quickstart_from_the_table() -> None:
    spec = load_spec("quickstart")
    estimate = estimate_cost(spec)
    per_epoch = EPOCH_COSTS[("digits", "small_cnn")].seconds
    overhead = TRIAL_OVERHEAD_S["actor"]  # one worker per trial: the actor executor
    assert estimate.total_trials == spec.expected_trials() == 24
    assert estimate.total_trial_epochs == 4 * (2 + 4) * 3  # 4 trials per cell, 3 cells per budget
    trial_seconds = 4 * 3 * (2 * per_epoch + overhead) + 4 * 3 * (4 * per_epoch + overhead)
    assert estimate.wall_hours == pytest.approx(
        trial_seconds / 3600 / spec.resources.max_concurrent_trials
    )
    assert estimate.device_hours["cpu"] == pytest.approx(trial_seconds * 0.5 / 3600)
    assert not estimate.unknown
    assert "cpu-hours" in estimate.summary()


def test_cost_overrides_and_gpu_scaling() -> None:
    spec = load_spec("cifar100_small", ["grid.budgets=[100]", "second_stage=null"])
    measured = estimate_cost(spec, {"cifar100/resnet20": 20.0}, trial_overhead_s=0.0)
    # 4 cells x 9 trials x 100 epochs x 20 s, each trial on half a GPU
    assert measured.device_hours["gpu"] == pytest.approx(4 * 9 * 100 * 20.0 * 0.5 / 3600)
    table = estimate_cost(spec, trial_overhead_s=0.0)
    # N s on a whole GPU = 2N s on half of one: the same GPU-hours
    whole_gpu = EPOCH_COSTS[("cifar100", "resnet20")].seconds
    assert table.device_hours["gpu"] == pytest.approx(4 * 9 * 100 * whole_gpu / 3600)
    assert table.wall_hours == pytest.approx(4 * 9 * 100 * 2 * whole_gpu / 3600 / 8)


def test_cost_reports_unknown_pairs_and_bad_keys() -> None:
    spec = parse_spec(payload(base__model={"name": "resnet20"}))
    estimate = estimate_cost(spec)
    assert estimate.unknown == [("digits", "resnet20")]
    assert estimate.wall_hours is None and estimate.device_hours == {}
    assert "no epoch cost for (digits, resnet20)" in estimate.summary()
    with pytest.raises(ValueError, match="epoch_seconds"):
        estimate_cost(spec, {"digits": 1.0})


def test_stored_spec_records_versions_and_reads_back(tmp_path: Any) -> None:
    spec = parse_spec(BASE)
    path = tmp_path / "sweep_spec.yaml"
    path.write_text(stored_spec_text(spec, {"ray": "2.60.0", "optuna": "5.0.0"}))
    stored = read_stored_sweep(str(path))
    assert stored is not None
    assert stored.spec == spec and stored.versions == {"ray": "2.60.0", "optuna": "5.0.0"}
    assert yaml.safe_load(path.read_text())["versions"]["ray"] == "2.60.0"


def test_stored_spec_of_an_older_release_drops_base_keys_no_trial_used(tmp_path: Any) -> None:
    """Older releases accepted `base.epochs: 1` (overwritten by every budget): such a sweep
    stays resumable, and its cells are those of the spec without the key."""
    older = payload(base__epochs=1, base__optim={"lr": 0.3, "momentum": 0.8})
    path = tmp_path / "sweep_spec.yaml"
    path.write_text(yaml.safe_dump(older))
    stored = read_stored_sweep(str(path))
    assert stored is not None and stored.versions == {}
    assert stored.spec.base["optim"] == {"momentum": 0.8} and "epochs" not in stored.spec.base
    with pytest.raises(SpecError, match=r"base\.epochs: grid\.budgets sets epochs"):
        parse_spec(older)


@pytest.mark.parametrize(
    ("model", "distribution"),
    [("small_cnn", "erk"), ("small_cnn", "uniform"), ("mlp", "erk"), ("resnet20", "erk")],
)
def test_largest_alive_sparsity_is_the_edge(model: str, distribution: str) -> None:
    shapes = maskable_shapes(ModelConfig(name=model), DataConfig(name="digits"))
    sparse = SparseConfig(distribution=distribution)
    largest = largest_alive_sparsity(shapes, sparse)
    assert 0.99 < largest < 1.0
    assert dead_layers(shapes, sparse, largest) is None
    assert dead_layers(shapes, sparse, min(largest + 1e-4, 1 - 1e-12)) is not None


def test_resnet50_shapes_come_without_allocating_weights() -> None:
    shapes = maskable_shapes(ModelConfig(name="resnet50"), DataConfig(name="imagenet", root="/x"))
    assert shapes["conv1"] == (64, 3, 7, 7) and shapes["fc"] == (1000, 2048)
    assert len(shapes) == 54


def test_stored_base_weight_decay_stays_when_weight_decay_is_not_searched(tmp_path: Any) -> None:
    spec = parse_spec(payload(base__optim={"weight_decay": 1e-3}))
    path = tmp_path / "sweep_spec.yaml"
    path.write_text(stored_spec_text(spec, {}))  # dumps `search.weight_decay: null`
    stored = read_stored_sweep(str(path))
    assert stored is not None and stored.spec.base["optim"] == {"weight_decay": 1e-3}


def test_analysis_section_is_the_report_declaration() -> None:
    """The spec's `analysis:` section becomes the JSON the tracker records as the experiment tag
    `sparsesweep.primary` and the report reads back (`analysis.primary.from_json`)."""
    from analysis.primary import from_json

    default = parse_spec(BASE).analysis.declaration()
    assert default.contrasts is None and default.alpha == 0.05 and default.halfwidth == 1.0
    spec = parse_spec(payload(analysis={"primary": ["rigl+sparseopt:rigl"], "target": 90}))
    declared = spec.analysis.declaration()
    assert declared.contrasts == (("rigl+sparseopt", "rigl"),) and declared.target == 90.0
    assert from_json(declared.to_json()) == declared


def test_dry_run_durations_are_in_the_unit_people_read() -> None:
    from sweeps.spec.cost import rough_duration

    assert [rough_duration(s) for s in (20.4, 180, 150 * 60, 40 * 3600, 1234 * 3600)] == [
        "20 s",
        "3 min",
        "2.5 h",
        "40 h",
        "1,200 h",
    ]
