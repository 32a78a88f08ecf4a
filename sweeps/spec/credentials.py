"""Secrets in a sweep spec: a spec is stored with the sweep and logged to MLflow, so none may be in it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

_SECRET_KEY_RE = re.compile(
    r"password|passwd|secret|token|credential|api[_-]?key|access[_-]?key|private[_-]?key",
    re.IGNORECASE,
)
_SECRET_VALUE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@|\bAKIA[0-9A-Z]{16}\b")
CREDENTIALS_HINT = (
    "a spec is stored with the sweep and logged to MLflow, so it must hold no secrets; give "
    "credentials through the environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
    "an instance profile for S3; MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
    "MLFLOW_TRACKING_TOKEN for an MLflow server)"
)


def credential_paths(payload: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of keys named like a secret and of values that embed one (URI user info,
    AWS access key ids)."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            child = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY_RE.search(str(key)):
                yield child
            else:
                yield from credential_paths(value, child)
    elif isinstance(payload, list | tuple):
        for index, value in enumerate(payload):
            yield from credential_paths(value, f"{path}[{index}]")
    elif isinstance(payload, str) and _SECRET_VALUE_RE.search(payload):
        yield path
