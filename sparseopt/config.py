"""The validated configuration of one training run (the single source of defaults).

`TrainConfig` is what `sparsesweep train` reads from YAML, what a sweep expands each
trial into, and what every run saves as its resolved config; `SparseConfig` is what
`sparseopt.attach` is validated by. This module imports pydantic, PyYAML (inside the functions
that read YAML) and the stdlib `contract` package only, never torch, so every layer can import
it cheaply.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.arms import METHOD_TRAITS, METHODS, MODIFIER_TABLE, modifiers_in_use, option_problems

Method = Literal[METHODS]  # type: ignore[valid-type]  # the names of contract.arms' registry
Distribution = Literal["erk", "uniform"]
Preconditioner = Literal["none", "sparseopt"]
RegrowScores = Literal["raw", "corrected"]
DropScores = Literal["magnitude", "row_normalized"]
DatasetName = Literal["digits", "synthetic", "cifar100", "imagenet"]
Decode = Literal["pil", "gpu"]
ModelName = Literal["resnet20", "resnet50", "mlp", "small_cnn"]
IMAGENET_CROP = 224
"""ImageNet's crop side in pixels: the image size its models see (here so that reading a config's
model input needs no torch)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HamConfig(_Strict):
    """Hyperbolic Aware Minimization (post-step multiplicative update) settings."""

    alpha: float = Field(200.0, gt=0)
    beta: float = Field(1e-3, ge=0)


class DataConfig(_Strict):
    """Which dataset, where it lives, and how it is batched.

    `decode` (ImageNet only) picks where JPEGs are decoded: "pil" in the loader workers, or
    "gpu": the workers read the file bytes and the training process decodes each batch with
    nvJPEG on its CUDA device (a run without CUDA is refused when it is built).
    """

    name: DatasetName = "digits"
    root: str | None = None
    download: bool = False
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    loader_workers: int = Field(0, ge=0)
    augment: bool = True
    decode: Decode = "pil"
    synthetic_train_size: int = Field(2048, ge=16)
    synthetic_test_size: int = Field(512, ge=16)
    synthetic_image_size: int = Field(32, ge=8)
    synthetic_num_classes: int = Field(10, ge=2)

    @model_validator(mode="after")
    def _root_required(self) -> DataConfig:
        if self.name in ("cifar100", "imagenet") and not self.root:
            raise ValueError(
                f"data.root is required for data.name={self.name!r} "
                "(a directory with the dataset, or where to download CIFAR-100)"
            )
        return self

    @model_validator(mode="after")
    def _gpu_decode_is_for_jpegs(self) -> DataConfig:
        if self.decode == "gpu" and self.name != "imagenet":
            raise ValueError(
                f"data.decode='gpu' decodes ImageNet JPEGs; data.name={self.name!r} has none "
                "(allowed: data.decode='pil' for every dataset, 'gpu' for data.name='imagenet')"
            )
        return self


class ModelConfig(_Strict):
    """Network architecture."""

    name: ModelName = "resnet20"
    width: int = Field(1, ge=1)
    hidden: int = Field(256, ge=1)
    batchnorm: bool = True


class SparseConfig(_Strict):
    """Everything `sparseopt.attach` needs besides the run's length and seed (see its docstring).

    The option rules (dense has no sparsity; SparseOpt's options need SparseOpt; renorm
    excludes clip; ...) are checked here, by `contract.arms.option_problems`, their one home.
    """

    method: Method = "rigl"
    sparsity: float = Field(0.9, ge=0.0, lt=1.0)
    distribution: Distribution = "erk"
    preconditioner: Preconditioner = "none"
    regrow_scores: RegrowScores = "raw"
    grad_renorm: bool = False
    grad_clip: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    f_max: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    sparseopt_layers: Literal["all", "normalized"] = "all"
    scale_weight_decay: bool = False
    ham: HamConfig | None = None
    delta_t: int = Field(100, ge=1)
    drop_fraction: float = Field(0.3, ge=0.0, le=1.0)
    t_end: float = Field(0.75, ge=0.0, le=1.0)
    drop_scores: DropScores = "magnitude"
    trace_rows: bool = False
    dense_layers: tuple[str, ...] = ()
    dense_in_budget: bool = True

    @model_validator(mode="after")
    def _options_fit(self) -> SparseConfig:
        problems = []
        if not METHOD_TRAITS[self.method].sparse and self.sparsity != 0.0:
            problems.append(f"sparse.sparsity must be 0 when sparse.method={self.method!r}")
        problems += option_problems(
            self.method, modifiers_in_use(dict(self)), name=self._option_name
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _option_name(self, modifier: str) -> str:
        """`sparse.FIELD=VALUE` of a modifier: the value set here, or the one it needs."""
        spec = next(item for item in MODIFIER_TABLE if item.name == modifier)
        value = getattr(self, spec.field)
        if value == spec.off:
            value = spec.on
        shown = "{...}" if spec.field == "ham" else repr(value)
        return f"sparse.{spec.field}={shown}"

    def modifiers(self) -> frozenset[str]:
        """The arm modifiers this config switches on (`contract.arms.MODIFIERS`)."""
        return modifiers_in_use(dict(self))


class OptimConfig(_Strict):
    """Base optimizer (SparseOpt wraps it through step hooks)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class ScheduleConfig(_Strict):
    """Per-step lr schedule: linear warmup then cosine decay (science.md §5)."""

    kind: Literal["warmup_cosine", "constant"] = "warmup_cosine"
    warmup_epochs: float = Field(5.0, ge=0.0)
    warmup_start_lr: float = Field(0.0, ge=0.0)
    final_lr: float = Field(1e-6, ge=0.0)
    reference_batch_size: int | None = Field(
        None, ge=1, description="if set, peak lr = optim.lr * global_batch / reference_batch_size"
    )


class TrainConfig(_Strict):
    """Everything one training run needs; hashed for run identity."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    sparse: SparseConfig = SparseConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: int = Field(10, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    deterministic: bool = True
    keep_checkpoints: int = Field(2, ge=1)

    def config_hash(self) -> str:
        """Stable 12-hex-digit identity of this resolved config.

        Fields added after sweeps were first recorded (`HASH_NEUTRAL_DEFAULTS`) count only when
        set off their default, so every trial recorded before keeps its identity (MLflow run,
        checkpoint directory).
        """
        payload = self.model_dump(mode="json")
        for (section, key), default in HASH_NEUTRAL_DEFAULTS.items():
            if payload[section][key] == default:
                del payload[section][key]
        return config_hash(payload)


HASH_NEUTRAL_DEFAULTS: dict[tuple[str, str], Any] = {
    ("sparse", "drop_scores"): "magnitude",
    ("sparse", "trace_rows"): False,
}
"""(section, field) -> default of the fields `TrainConfig.config_hash` leaves out at that default."""


def config_hash(payload: dict[str, Any]) -> str:
    """Hash of a JSON-serialisable dict, independent of key order."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def set_dotted(payload: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `payload["a"]["b"] = value` for `dotted_key="a.b"`, creating sub-dicts."""
    keys = dotted_key.split(".")
    node = payload
    for depth, key in enumerate(keys[:-1], start=1):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            section = ".".join(keys[:depth])
            raise ValueError(
                f"cannot set {dotted_key!r}: {section!r} holds a value ({child!r}), not a section "
                f"of keys; set {section!r} itself"
            )
        node = child
    node[keys[-1]] = value


def _yaml_problem(error: Exception) -> str:
    """`line L, column C: problem` of a YAML parse error (1-based, as editors count)."""
    import yaml

    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if isinstance(error, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def apply_overrides(payload: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings (values parsed as YAML scalars/lists) to a dict copy."""
    import copy

    import yaml

    result = copy.deepcopy(payload)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.05")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ValueError(
                f"--set {item!r}: empty key; expected KEY=VALUE, e.g. --set optim.lr=0.05"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(
                f"--set {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
                "allowed: a YAML scalar, list or mapping, e.g. --set grid.seeds=[0,1]"
            ) from None
        try:
            set_dotted(result, key.strip(), value)
        except ValueError as error:
            raise ValueError(f"--set {item!r}: {error}") from None
    return result


def load_yaml_mapping(path: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; ValueError naming the file (and line) otherwise."""
    import yaml

    with open(path) as handle:
        try:
            loaded = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: expected a mapping (key: value) at the top level, got {type(loaded).__name__}"
        )
    return loaded


def load_train_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or start from defaults), apply overrides, and validate."""
    payload = load_yaml_mapping(path) if path is not None else {}
    return TrainConfig.model_validate(apply_overrides(payload, overrides or []))
