"""Importing `sparseopt` or its config loads no torch; the public names load on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sparseopt

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_importing_sparseopt_and_its_config_loads_no_torch() -> None:
    run_python(
        "import sys, sparseopt, sparseopt.config;"
        "sparseopt.config.TrainConfig().config_hash();"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules];"
        "assert not bad, bad"
    )


def test_a_public_name_or_submodule_loads_its_module_on_first_use() -> None:
    run_python(
        "import sys, sparseopt;"
        "assert 'torch' not in sys.modules;"
        "attach = sparseopt.attach;"
        "assert 'torch' in sys.modules and attach.__module__ == 'sparseopt.state';"
        "assert sparseopt.topology.UPDATERS is sparseopt.UPDATERS"
    )


def test_every_public_name_resolves_and_unknown_names_raise_attribute_error() -> None:
    for name in sparseopt.__all__:
        assert getattr(sparseopt, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        sparseopt.no_such_name  # noqa: B018
