"""Reading a sweep spec: YAML file + `--set` overrides → a validated `SweepSpec` whose every cell
passes `sweeps.spec.checks`; and the spec file stored with a sweep (spec + library versions).

`parse_spec` is the one way in: the schema validates each field, then the cross-cell checks run
on the validated spec, and every problem becomes one `SpecError` naming its field path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sparseopt.config import apply_overrides, load_yaml_mapping
from sweeps.spec.cells import (
    BASE_SETTABLE,
    SEARCHED_KEYS,
    fixed_keys,
    flatten_overrides,
    overriding,
)
from sweeps.spec.checks import check_cells, check_fixed_keys
from sweeps.spec.messages import SpecError, format_validation_error
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import read_text

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
VERSIONS_KEY = "versions"
"""Top-level key of a stored spec file holding the library versions (not a spec field)."""


def parse_spec(payload: Mapping[str, Any]) -> SweepSpec:
    """Validate a spec dict; raise SpecError listing each problem by field path."""
    if not isinstance(payload, Mapping):
        raise SpecError(f"a sweep spec is a mapping at the top level, got {type(payload).__name__}")
    try:
        spec = SweepSpec.model_validate(dict(payload))
    except ValidationError as error:
        raise SpecError(format_validation_error(error, SweepSpec)) from None
    try:
        check_fixed_keys(spec)
        check_cells(spec)
    except ValueError as error:
        raise SpecError(str(error)) from None
    return spec


def resolve_spec_path(path: str | os.PathLike[str]) -> Path:
    """A spec file path; a bare name like `quickstart` also finds the bundled sweeps/configs."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    bundled = CONFIGS_DIR / f"{candidate.name.removesuffix('.yaml')}.yaml"
    if candidate.parent == Path(".") and bundled.exists():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"sweep spec {str(path)!r} not found (bundled specs: {known})")


@dataclass(frozen=True)
class StoredSweep:
    """What a sweep's stored spec file holds: the spec and the library versions it ran under."""

    spec: SweepSpec
    versions: dict[str, str]


def stored_spec_text(spec: SweepSpec, versions: Mapping[str, str]) -> str:
    """The stored spec file: the validated spec, then `versions:` (see `sweeps.run.versions`)."""
    return spec.to_yaml() + yaml.safe_dump({VERSIONS_KEY: dict(versions)}, sort_keys=False)


def _stored_payload(payload: Any) -> tuple[Any, dict[str, str]]:
    """A stored spec's payload and its recorded versions, with the `base` keys older releases
    stored but every trial overwrote (`base.epochs`, ...) dropped: they never reached a trial,
    so dropping them changes none, and the sweep stays resumable."""
    if not isinstance(payload, Mapping):
        return payload, {}
    payload = copy.deepcopy(dict(payload))
    versions = payload.pop(VERSIONS_KEY, None)
    versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
    base, search = payload.get("base"), payload.get("search")
    if isinstance(base, dict):
        searched = [
            name
            for name in SEARCHED_KEYS
            if isinstance(search, Mapping) and search.get(name) is not None
        ]
        fixed = fixed_keys(searched, BASE_SETTABLE)
        for key in overriding(flatten_overrides(base), fixed, BASE_SETTABLE):
            _delete_dotted(base, key)
    return payload, versions


def _delete_dotted(payload: dict[str, Any], dotted: str) -> None:
    """Remove `payload["a"]["b"]` for `dotted="a.b"`, and any section that leaves empty."""
    head, _, rest = dotted.partition(".")
    if not rest:
        payload.pop(head, None)
        return
    child = payload.get(head)
    if isinstance(child, dict):
        _delete_dotted(child, rest)
        if not child:
            payload.pop(head)


def read_stored_sweep(path: str) -> StoredSweep | None:
    """The spec and versions stored at `path` (local or object store); None if absent;
    ValueError naming the file if the spec does not validate."""
    text = read_text(path)
    if text is None:
        return None
    try:
        payload, versions = _stored_payload(yaml.safe_load(text))
        return StoredSweep(parse_spec(payload), versions)
    except ValueError as error:
        raise ValueError(f"{path}: the stored sweep spec does not validate:\n{error}") from None


def read_spec_file(path: str) -> SweepSpec | None:
    """The sweep spec stored at `path` (see `read_stored_sweep`); None if absent."""
    stored = read_stored_sweep(path)
    return None if stored is None else stored.spec


def load_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> SweepSpec:
    """Read a YAML spec, apply `key.sub=value` overrides (values parsed as YAML), validate."""
    loaded = load_yaml_mapping(str(resolve_spec_path(path)))
    return parse_spec(apply_overrides(loaded, overrides or []))
