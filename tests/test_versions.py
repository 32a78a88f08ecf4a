"""Library versions: recorded with a sweep, and the rule for resuming under other ones."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from sweep_helpers import ONE_TRIAL_SPEC

from sweeps.run.launch import SweepError, prepare
from sweeps.run.versions import (
    TRACKED,
    VersionChangeError,
    check_resume_versions,
    installed_versions,
    version_tags,
)
from sweeps.spec.load import parse_spec, stored_spec_text
from sweeps.spec.storage import locate

RAN_UNDER = {"ray": "2.60.0", "mlflow": "3.17.2", "optuna": "5.0.0", "torch": "2.14.1"}


def test_installed_versions_are_the_four_tracked_libraries() -> None:
    assert tuple(installed_versions()) == TRACKED == ("ray", "mlflow", "optuna", "torch")
    assert installed_versions()["ray"] == metadata.version("ray")
    assert version_tags({"ray": "2.60.0"}) == {"sparsesweep.version.ray": "2.60.0"}


@pytest.mark.parametrize("library", ["ray", "optuna"])
def test_another_ray_or_optuna_is_refused_naming_both_versions(library: str) -> None:
    now = {**RAN_UNDER, library: "9.9.9"}
    with pytest.raises(VersionChangeError) as refused:
        check_resume_versions(RAN_UNDER, now, allow_change=False, sweep="s")
    message = str(refused.value)
    assert "ran under ray 2.60.0, optuna 5.0.0" in message
    assert f"{library} 9.9.9" in message and "--allow-version-change" in message
    assert "pip install ray==2.60.0 optuna==5.0.0" in message


def test_allowed_change_and_other_libraries_only_warn() -> None:
    now = {**RAN_UNDER, "optuna": "5.1.0", "torch": "2.15.0"}
    warnings = check_resume_versions(RAN_UNDER, now, allow_change=True, sweep="s")
    assert len(warnings) == 2
    assert "optuna 5.0.0 -> 5.1.0 (--allow-version-change)" in warnings[0]
    assert "torch 2.14.1 -> 2.15.0" in warnings[1]
    only_torch = {**RAN_UNDER, "torch": "2.15.0"}
    assert len(check_resume_versions(RAN_UNDER, only_torch, allow_change=False, sweep="s")) == 1


def test_same_versions_or_none_recorded_pass_silently() -> None:
    assert check_resume_versions(RAN_UNDER, RAN_UNDER, allow_change=False, sweep="s") == []
    assert check_resume_versions({}, RAN_UNDER, allow_change=False, sweep="s") == []


def stored_sweep_under(tmp_path: Path, versions: dict[str, str]):
    """A spec whose sweep exists on disk, stored as having run under `versions`."""
    spec = parse_spec(
        {
            "name": "v",
            **ONE_TRIAL_SPEC,
            "storage_path": str(tmp_path / "results"),
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    spec_file = Path(locate(spec).spec_file)
    spec_file.parent.mkdir(parents=True)
    spec_file.write_text(stored_spec_text(spec, versions))
    return spec, spec_file


def test_resume_checks_versions_before_ray_starts(tmp_path: Path) -> None:
    spec, spec_file = stored_sweep_under(tmp_path, {**installed_versions(), "ray": "1.0.0"})
    before = spec_file.read_text()
    with pytest.raises(SweepError, match=r"ran under ray 1\.0\.0"):
        prepare(spec)
    assert spec_file.read_text() == before
    _, stored, warnings = prepare(spec, allow_version_change=True)
    assert stored is not None and stored.versions["ray"] == "1.0.0"
    assert len(warnings) == 1 and "ray 1.0.0 -> " in warnings[0]


def test_resume_under_the_recorded_versions_says_nothing(tmp_path: Path) -> None:
    spec, _ = stored_sweep_under(tmp_path, installed_versions())
    assert prepare(spec)[2] == []
