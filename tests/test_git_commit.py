"""The commit recorded on every MLflow run is the code's checkout, not the working directory's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweeps.tracking import runs


def test_git_commit_names_the_code_checkout_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a git checkout
    checkout = Path(runs.__file__).resolve().parents[2]
    expected = r"[0-9a-f]{40}(\+dirty)?" if (checkout / ".git").exists() else "unknown"
    assert re.fullmatch(expected, runs.git_commit())


def test_git_commit_is_unknown_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert runs.git_commit() == "unknown"
