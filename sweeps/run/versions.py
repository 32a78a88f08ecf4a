"""The library versions a sweep runs under, recorded with it, and the rule for resuming.

A sweep's stored state is read back by the libraries that wrote it: Tune's experiment state
and the Optuna studies inside the searcher are pickles, which another Ray or Optuna release may
not read the same way (or at all). The versions of ray, mlflow, optuna and torch go into the
stored spec (`versions:`) and onto the MLflow experiment as tags; a resume under another ray
or optuna version is refused unless allowed, and other changes are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

TRACKED: tuple[str, ...] = ("ray", "mlflow", "optuna", "torch")
"""The libraries whose versions a sweep records."""
RESUME_PINNED: tuple[str, ...] = ("ray", "optuna")
"""Libraries whose pickled state a resume unpickles: changing them is refused unless allowed."""
TAG_PREFIX = "sparsesweep.version."
"""MLflow experiment tag of each library's version: `sparsesweep.version.ray`, ..."""


class VersionChangeError(ValueError):
    """A resume under ray/optuna versions other than the ones the sweep ran under."""


def installed_versions() -> dict[str, str]:
    """The installed version of each tracked library ('not installed' if missing)."""
    found = {}
    for name in TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def version_tags(versions: Mapping[str, str]) -> dict[str, str]:
    """The MLflow experiment tags recording `versions`."""
    return {f"{TAG_PREFIX}{name}": version for name, version in versions.items()}


def _changes(
    recorded: Mapping[str, str], current: Mapping[str, str], names: tuple[str, ...]
) -> list[str]:
    """`name old -> new` for each of `names` recorded with another version than installed."""
    return [
        f"{name} {recorded[name]} -> {current.get(name, 'not installed')}"
        for name in names
        if name in recorded and recorded[name] != current.get(name, "not installed")
    ]


def check_resume_versions(
    recorded: Mapping[str, str], current: Mapping[str, str], allow_change: bool, sweep: str
) -> list[str]:
    """Warnings for a resume under `current` versions of a sweep recorded with `recorded`.

    Raise VersionChangeError when ray or optuna changed and `allow_change` is false. A sweep
    stored before versions were recorded (`recorded` empty) passes without a word.
    """
    pinned = _changes(recorded, current, RESUME_PINNED)
    others = _changes(recorded, current, tuple(n for n in TRACKED if n not in RESUME_PINNED))
    if pinned and not allow_change:
        raise VersionChangeError(
            f"sweep {sweep!r} ran under {', '.join(_was(recorded, RESUME_PINNED))}, but this "
            f"machine has {', '.join(_now(current, RESUME_PINNED))}; its saved Tune and Optuna "
            "state may not restore under other versions. Install the recorded ones (pip "
            f"install {' '.join(_pins(recorded, RESUME_PINNED))}), or pass "
            "--allow-version-change to resume anyway"
        )
    warnings = []
    if pinned:
        warnings.append(
            f"resuming sweep {sweep!r} under {', '.join(pinned)} (--allow-version-change): "
            "check that restored trials and the lr search carry on as before"
        )
    if others:
        warnings.append(
            f"sweep {sweep!r} ran under other library versions ({', '.join(others)}); trials "
            "run from now on use the installed ones"
        )
    return warnings


def _was(recorded: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """`name version` of each of `names` as recorded."""
    return [f"{name} {recorded[name]}" for name in names if name in recorded]


def _pins(recorded: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """`name==version` of each of `names` as recorded (a pip requirement)."""
    return [f"{name}=={recorded[name]}" for name in names if name in recorded]


def _now(current: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """`name version` of each of `names` as installed."""
    return [f"{name} {current.get(name, 'not installed')}" for name in names]
