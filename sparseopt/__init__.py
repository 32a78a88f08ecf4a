"""sparseopt: sparse training with SparseOpt gradient correction, driven by optimizer hooks.

Usage: `state = sparseopt.attach(model, optimizer, method="rigl", sparsity=0.95, ...)`, then a
plain `loss.backward(); optimizer.step()` loop. This package imports only torch (never ray,
optuna or mlflow).
"""

from sparseopt.distributions import erk_densities, layer_nonzeros, uniform_densities
from sparseopt.ham import HamSettings, ham_step, ham_update_
from sparseopt.masks import layer_generator, maskable_weights, normalized_layers, random_mask
from sparseopt.preconditioners import clip_grads_, neuron_scale, renormalize_grads_
from sparseopt.state import SparseSettings, SparseState, TopologyUpdate, attach, attach_from_config
from sparseopt.topology import drop_fraction_at, is_update_step

__all__ = [
    "HamSettings",
    "SparseSettings",
    "SparseState",
    "TopologyUpdate",
    "attach",
    "attach_from_config",
    "clip_grads_",
    "drop_fraction_at",
    "erk_densities",
    "ham_step",
    "ham_update_",
    "is_update_step",
    "layer_generator",
    "layer_nonzeros",
    "maskable_weights",
    "neuron_scale",
    "normalized_layers",
    "random_mask",
    "renormalize_grads_",
    "uniform_densities",
]

# Models, data, schedules, engine, checkpoints and diagnostics: the training side of the library.
from sparseopt.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_payload,
)
from sparseopt.data import DataRootError, build_datasets, build_loaders
from sparseopt.diagnostics import (
    fan_in_spread,
    following_batchnorms,
    gradient_skew_curve,
    plot_gradient_skew,
    row_weights_vs_fan_in,
    weight_fan_in_rows,
)
from sparseopt.engine import DivergedError, evaluate, seed_everything, train_one_epoch
from sparseopt.models import build_model, mlp, resnet20, resnet50, small_cnn
from sparseopt.recipe import Run, build_run, resolve_device
from sparseopt.runner import run_training
from sparseopt.schedules import build_scheduler, warmup_cosine

__all__ += [
    "CheckpointError",
    "DataRootError",
    "DivergedError",
    "Run",
    "build_datasets",
    "build_loaders",
    "build_model",
    "build_run",
    "build_scheduler",
    "evaluate",
    "fan_in_spread",
    "following_batchnorms",
    "gradient_skew_curve",
    "load_checkpoint",
    "load_latest_checkpoint",
    "mlp",
    "plot_gradient_skew",
    "resnet20",
    "resnet50",
    "resolve_device",
    "restore_training_state",
    "row_weights_vs_fan_in",
    "run_training",
    "save_checkpoint",
    "seed_everything",
    "small_cnn",
    "train_one_epoch",
    "training_payload",
    "warmup_cosine",
    "weight_fan_in_rows",
]
