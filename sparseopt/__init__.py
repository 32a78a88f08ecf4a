"""sparseopt: sparse training with SparseOpt gradient correction, driven by optimizer hooks.

Usage: `state = sparseopt.attach(model, optimizer, method="rigl", sparsity=0.95, ...)`, then a
plain `loss.backward(); optimizer.step()` loop. The library imports torch (plus torchvision,
numpy and scikit-learn for models and data), never ray, optuna or mlflow.

Importing the package, or `sparseopt.config`, loads no torch: each public name below is
imported from its module on first use (PEP 562), so a command that only reads a config
(`sparsesweep status`) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # the sparse state and its parts
    "SparseState": "sparseopt.state",
    "TopologyUpdate": "sparseopt.state",
    "RowUpdate": "sparseopt.state",
    "attach": "sparseopt.state",
    "erk_densities": "sparseopt.distributions",
    "layer_nonzeros": "sparseopt.distributions",
    "uniform_densities": "sparseopt.distributions",
    "ham_step": "sparseopt.ham",
    "ham_update_": "sparseopt.ham",
    "layer_generator": "sparseopt.masks",
    "maskable_weights": "sparseopt.masks",
    "normalized_layers": "sparseopt.masks",
    "random_mask": "sparseopt.masks",
    "clip_grads_": "sparseopt.preconditioners",
    "neuron_scale": "sparseopt.preconditioners",
    "renormalize_grads_": "sparseopt.preconditioners",
    "UPDATERS": "sparseopt.topology",
    "drop_fraction_at": "sparseopt.topology",
    "is_update_step": "sparseopt.topology",
    # configuration
    "SparseConfig": "sparseopt.config",
    "TrainConfig": "sparseopt.config",
    # models, data, schedules, engine, checkpoints, diagnostics: the training side
    "CheckpointError": "sparseopt.checkpoint",
    "load_checkpoint": "sparseopt.checkpoint",
    "load_latest_checkpoint": "sparseopt.checkpoint",
    "restore_training_state": "sparseopt.checkpoint",
    "save_checkpoint": "sparseopt.checkpoint",
    "training_payload": "sparseopt.checkpoint",
    "DataRootError": "sparseopt.data",
    "build_datasets": "sparseopt.data",
    "build_loaders": "sparseopt.data",
    "fan_in_spread": "sparseopt.diagnostics",
    "following_batchnorms": "sparseopt.diagnostics",
    "gradient_skew_curve": "sparseopt.diagnostics",
    "plot_gradient_skew": "sparseopt.diagnostics",
    "row_norm_trace": "sparseopt.diagnostics",
    "row_weights_vs_fan_in": "sparseopt.diagnostics",
    "weight_fan_in_rows": "sparseopt.diagnostics",
    "DivergedError": "sparseopt.engine",
    "evaluate": "sparseopt.engine",
    "seed_everything": "sparseopt.engine",
    "train_one_epoch": "sparseopt.engine",
    "LoopOutcome": "sparseopt.loop",
    "TrainingSession": "sparseopt.loop",
    "run_epochs": "sparseopt.loop",
    "build_model": "sparseopt.models",
    "mlp": "sparseopt.models",
    "resnet20": "sparseopt.models",
    "resnet50": "sparseopt.models",
    "small_cnn": "sparseopt.models",
    "Run": "sparseopt.recipe",
    "build_run": "sparseopt.recipe",
    "resolve_device": "sparseopt.recipe",
    "run_training": "sparseopt.runner",
    "build_scheduler": "sparseopt.schedules",
    "warmup_cosine": "sparseopt.schedules",
}
"""Public name -> the module that defines it."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module, or a submodule (`sparseopt.state`), on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
