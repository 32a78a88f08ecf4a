"""Packaging: the licence, the version bounds of the libraries whose internals the code uses,
and the lock file `make` installs from."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from sweeps.run.versions import TRACKED

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = {
    Requirement(text).name: Requirement(text)
    for text in (
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["dev"],
    )
}


def lock() -> dict[str, str]:
    """requirements.lock as name -> pinned version."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_licence_is_an_spdx_expression_with_its_file() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]  # SPDX licence support


@pytest.mark.parametrize("name", TRACKED)
def test_fragile_libraries_are_bounded_above_and_installed_within(name: str) -> None:
    specifier = DEPENDENCIES[name].specifier
    assert any(spec.operator == "<" for spec in specifier), f"{name} has no upper bound"
    assert Version(metadata.version(name)) in specifier


def test_lock_pins_every_dependency_within_its_range() -> None:
    pins = lock()
    for name, requirement in DEPENDENCIES.items():
        assert name in pins, f"{name} is not in requirements.lock"
        assert Version(pins[name]) in requirement.specifier, (name, pins[name])


@pytest.mark.parametrize("name", TRACKED)
def test_lock_pins_the_installed_versions(name: str) -> None:
    assert lock()[name] == metadata.version(name), "run `make lock` after upgrading"


def test_make_installs_through_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(LOCK\)$", makefile, re.MULTILINE)
    assert 'pip install --quiet -c $(LOCK) -e ".[dev]"' in makefile


def test_readme_says_how_big_and_how_long_the_install_is() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "≈ 6–7 GB" in readme and "CUDA build" in readme
    assert "first install takes" in readme
