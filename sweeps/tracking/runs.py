"""How the sweep's MLflow runs are named and tagged: trial, cell and curve runs, the source
tags MLflow users expect on every run (user, the git checkout the code runs from), and the
experiment's description.

Run roles (`contract.names.Role`): a *trial* run per trial (child of its cell run); a *cell*
run per cell (workload × arm × sparsity × budget) holding the per-epoch seed means of the runs
the report compares; a *curve* run per (workload, dataset/model, arm, sparsity) holding, at
`step = budget`, the final accuracy and its interval (the convergence-versus-budget curves).
"""

from __future__ import annotations

import functools
import getpass
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_REPO_URL,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from contract.names import CURVE_FACTORS, Aggregate, Role, Tag, seed_mean
from contract.outcome import Status
from contract.trial import Stage, TrialMeta

SOURCE_NAME = "sparsesweep"
CHECKOUT = Path(__file__).resolve().parents[2]
"""The checkout this code runs from (asked for its commit, not the working directory: a sweep
launched from elsewhere still records the code it ran)."""


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested dict to dotted keys with string values (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def trial_run_name(meta: TrialMeta) -> str:
    """Readable child-run name, e.g. `rigl+sparseopt s=0.95 e=100 seed=0 lr=0.08`."""
    text = f"{meta.arm} s={meta.sparsity:g} e={meta.budget} seed={meta.seed} lr={meta.lr:.3g}"
    return f"{text} final" if meta.stage == Stage.FINAL else text


def cell_run_name(meta: TrialMeta) -> str:
    """Readable parent-run name, e.g. `rigl+sparseopt s=0.95 e=100`."""
    prefix = "" if meta.workload == "default" else f"{meta.workload} "
    return f"{prefix}{meta.arm} s={meta.sparsity:g} e={meta.budget}"


def trial_tags(meta: TrialMeta, train: Mapping[str, Any]) -> dict[str, str]:
    """Every factor of a trial as MLflow tags (`contract.names.TRIAL_TAGS`, docs/conventions.md)."""
    sparse = train["sparse"]
    return {
        Tag.ROLE: Role.TRIAL,
        Tag.STATUS: Status.RUNNING.value,
        "cell": meta.cell,
        "workload": meta.workload,
        "arm": meta.arm,
        "method": sparse["method"],
        "preconditioner": sparse["preconditioner"],
        "regrow_scores": sparse["regrow_scores"],
        "ham": str(sparse["ham"] is not None).lower(),
        "grad_renorm": str(sparse["grad_renorm"]).lower(),
        "dataset": train["data"]["name"],
        "model": train["model"]["name"],
        "sparsity": f"{meta.sparsity:g}",
        "budget": str(meta.budget),
        "seed": str(meta.seed),
        "lr": f"{meta.lr:.6g}",
        "weight_decay": f"{train['optim']['weight_decay']:.6g}",
        "delta_t": str(sparse["delta_t"]),
        "stage": meta.stage,
        "lr_trial": str(meta.lr_trial),
        "config_hash": meta.config_hash,
    }


def cell_tags(meta: TrialMeta) -> dict[str, str]:
    """The factors of a trial's cell as MLflow tags of its cell run."""
    return {
        Tag.ROLE: Role.CELL,
        "cell": meta.cell,
        "workload": meta.workload,
        "arm": meta.arm,
        "method": meta.method,
        "sparsity": f"{meta.sparsity:g}",
        "budget": str(meta.budget),
    }


def curve_run_name(curve: Mapping[str, Any]) -> str:
    """Readable curve-run name, e.g. `curve rigl+sparseopt s=0.97` (workload first if not default)."""
    prefix = "" if curve["workload"] == "default" else f"{curve['workload']} "
    return f"curve {prefix}{curve['arm']} s={float(curve['sparsity']):g}"


IDENTITY_TAGS: dict[str, tuple[str, ...]] = {
    Role.TRIAL: ("config_hash",),
    Role.CELL: ("cell",),
    Role.CURVE: CURVE_FACTORS,
}


def run_identity(tags: Mapping[str, str]) -> tuple[str, ...] | None:
    """What a sweep's trial, cell or curve run stands for, from its tags: (role, values of
    `IDENTITY_TAGS[role]`); None for any other run (reports)."""
    role = tags.get(Tag.ROLE)
    if role not in IDENTITY_TAGS:
        return None
    return (role, *(tags.get(key, "") for key in IDENTITY_TAGS[role]))


def curve_tags(curve: Mapping[str, Any]) -> dict[str, str]:
    """The factors of a curve run (one arm at one sparsity, all budgets) as MLflow tags."""
    tags = {Tag.ROLE: Role.CURVE, **{key: str(curve[key]) for key in IDENTITY_TAGS[Role.CURVE]}}
    tags["sparsity"] = f"{float(curve['sparsity']):g}"
    return tags


def source_tags(git_commit: str) -> dict[str, str]:
    """The tags MLflow's UI shows for every run: user, source, git commit (and whether tracked
    files had uncommitted changes: `sparsesweep.git_dirty`) and the repository's URL (not a
    local path, which says nothing on another machine)."""
    tags = {
        MLFLOW_USER: user_name(),
        MLFLOW_SOURCE_NAME: SOURCE_NAME,
        MLFLOW_SOURCE_TYPE: "LOCAL",
    }
    commit = git_commit.removesuffix("+dirty")
    if commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit
    if git_commit.endswith("+dirty"):
        tags[Tag.GIT_DIRTY] = "true"
    url = git_remote_url()
    if url and ("://" in url or url.startswith("git@")):
        tags[MLFLOW_GIT_REPO_URL] = url
    return tags


def user_name() -> str:
    """The login name of the user running the sweep ('unknown' if the system has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git(*args: str) -> str | None:
    """A git command's output in `CHECKOUT` (None if git fails or is missing)."""
    try:
        found = subprocess.run(
            ["git", "-C", str(CHECKOUT), *args],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def git_commit() -> str:
    """The commit of the checkout this code runs from, '+dirty' if tracked files changed;
    'unknown' outside a git checkout."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if status else head


@functools.cache
def git_remote_url() -> str | None:
    """The `origin` remote of the checkout this code runs from, if it has one."""
    return _git("remote", "get-url", "origin") or None


def experiment_note(sweep: str, factors: Mapping[str, Any], metric: str) -> str:
    """The experiment description (`mlflow.note.content`): the factors and how to read the runs."""
    lines = [
        f"# Sweep `{sweep}`",
        "",
        *(f"- **{name}**: {', '.join(str(v) for v in values)}" for name, values in factors.items()),
        f"- **lr** chosen per cell on the mean over seeds of `{metric}` (a diverged seed scores "
        "the worst value)",
        "",
        "How to read the runs (tag `sparsesweep.role`):",
        "- `cell`: one per workload × arm × sparsity × budget, the parent of its trial runs; "
        "once all its trials have ended it logs, per epoch (`step = epoch`), the seed means "
        f"`{seed_mean('test_acc1')}`, `{seed_mean('val_acc1')}`, `{seed_mean('test_loss')}`, "
        f"`{Aggregate.TEST_ACC1_STD}` and `{Aggregate.N_SEEDS}` of the runs the report compares "
        "(its chosen lr: tag `lr`).",
        "- `curve`: one per workload × arm × sparsity; at `step = budget` the final "
        f"`{Aggregate.TEST_ACC1_MEAN}` with `{Aggregate.TEST_ACC1_CI_LOW}`/`_high` (95% "
        f"t-interval over seeds, within [0, 100]) and its n `{Aggregate.TEST_ACC1_N}` and, for "
        f"a SparseOpt arm, `{Aggregate.DIFF_MEAN}` with its paired interval. Filter the runs on "
        f"``tags.`{Tag.ROLE}` = '{Role.CURVE}'`` and open the chart view: accuracy against budget, "
        "every arm side by side (`sparsesweep queries NAME` prints the link).",
        "- `trial`: one per trial, every epoch's metrics; `sparsesweep.status` says how it ended.",
        "- `report`: the artifacts of `sparsesweep report`.",
    ]
    return "\n".join(lines)
