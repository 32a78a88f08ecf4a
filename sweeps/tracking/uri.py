"""The one check of an MLflow tracking URI, shared by `run`, `resume`, `ui`, `export`, `report`
and the tracker's sender thread.

Allowed: `sqlite:///PATH`, `file:///PATH` (or a bare path), `http(s)://HOST:PORT` (an MLflow
server) and database URIs MLflow opens directly (`postgresql://`, `mysql://`, `mssql://`, with an
optional `+driver`). A server counts as reachable when `/health` gives any HTTP answer (servers
behind an authenticating proxy answer 401); a refused or silent one fails within seconds instead
of after the MLflow client's minutes of retries.
"""

from __future__ import annotations

import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from pathlib import Path

SCHEMES: tuple[str, ...] = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql")
PROBE_TIMEOUT_S = 5.0
ALLOWED = (
    "sqlite:///PATH, file:///PATH, http(s)://HOST:PORT (an MLflow server) or a database URI "
    "(postgresql://, mysql://, mssql://)"
)


class TrackingUriError(ValueError):
    """A tracking URI that is malformed, unsupported or unreachable (the message names `field`)."""


def scheme_of(uri: str) -> str:
    """The URI's scheme without a `+driver` suffix; `file` for a bare path."""
    if "://" not in uri and not uri.startswith("sqlite:"):
        return "file"
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def is_server(uri: str) -> bool:
    """Whether the URI names an MLflow tracking server (http or https)."""
    return scheme_of(uri) in ("http", "https")


def probe_server(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ConnectionError unless the server at `uri` gives any HTTP answer on `/health`."""
    url = uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:
        raise ConnectionError(
            f"{url} does not answer ({getattr(error, 'reason', error)})"
        ) from None


def check_tracking_uri(
    uri: str,
    *,
    field: str = "tracking_uri",
    must_exist: bool = False,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> None:
    """Raise TrackingUriError when MLflow cannot use `uri`.

    `must_exist`: a local store must already hold a database (reading a sweep: `ui`, `export`,
    `report`); otherwise its folder must be writable (a sweep creates it).
    """
    scheme = scheme_of(uri)
    if scheme not in SCHEMES:
        raise TrackingUriError(
            f"{field}: unsupported scheme {scheme!r} in {uri!r}; allowed: {ALLOWED}"
        )
    if scheme in ("http", "https"):
        try:
            probe_server(uri, timeout_s)
        except ConnectionError as error:
            raise TrackingUriError(
                f"{field}: MLflow server {uri} is unreachable ({error}); start it "
                f"(`sparsesweep ui`) or point {field} at a running one"
            ) from None
    elif scheme == "sqlite":
        _check_local(Path(uri.removeprefix("sqlite:///")), field, "SQLite database", must_exist)
    elif scheme == "file":
        _check_local(Path(uri.removeprefix("file://")), field, "file store", must_exist)
    else:
        _check_database(uri, field, timeout_s)


def _check_local(path: Path, field: str, what: str, must_exist: bool) -> None:
    if must_exist:
        if not path.exists():
            raise TrackingUriError(
                f"{field}: no MLflow {what} at {path.absolute()}; allowed: the tracking_uri of a "
                "sweep that has run (run one first)"
            )
        return
    parent = path.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise TrackingUriError(
            f"{field}: directory {parent} of the {what} is missing or not writable"
        )


def _check_database(uri: str, field: str, timeout_s: float) -> None:
    """Open one connection to a database store (in a thread, so a silent host cannot hang us)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri)
    except (ImportError, sqlalchemy.exc.ArgumentError) as error:
        raise TrackingUriError(f"{field}: cannot open {scheme_of(uri)} store ({error})") from None
    problem: list[str] = []

    def connect() -> None:
        try:
            engine.connect().close()
        except Exception as error:  # any driver error means the store is unusable
            problem.append(str(error).splitlines()[0])

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive() or problem:
        reason = problem[0] if problem else f"no answer within {timeout_s:g} s"
        raise TrackingUriError(f"{field}: database store is unreachable ({reason})")


DRAIN_TIMEOUT_S = 30.0
"""How long the end of a sweep (or `sparsesweep sync`) waits for MLflow to take the next record
of the outbox before it stops and says what is left: a slow MLflow is waited for as long as
it keeps taking records, a dead one for this long."""
DRAIN_TIMEOUT_ENV = "SPARSESWEEP_MLFLOW_DRAIN_S"
"""Environment variable that overrides `DRAIN_TIMEOUT_S` (seconds, > 0), read at each start."""


def drain_timeout_s(environ: Mapping[str, str] = os.environ) -> float:
    """The end-of-sweep wait for MLflow: `DRAIN_TIMEOUT_ENV` if set, else `DRAIN_TIMEOUT_S`."""
    raw = environ.get(DRAIN_TIMEOUT_ENV)
    if raw is None:
        return DRAIN_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{DRAIN_TIMEOUT_ENV}={raw!r}: allowed values are seconds > 0")
    return value


def tracker_http_settings() -> dict[str, str]:
    """The tracker's MLflow HTTP client, by MLflow's own variable names: one retry after 1 s and
    30 s per attempt, not MLflow's default 7 retries with backoff (≈ 4 min per request against
    a dead server). The sender keeps every record in the outbox and tries again itself, so a
    request that fails fast costs nothing, while one stuck in MLflow's retries held the
    end-of-sweep drain for minutes."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    return {
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "1",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name: "1",
        MLFLOW_HTTP_REQUEST_TIMEOUT.name: "30",
    }


def bound_http_retries(environ: MutableMapping[str, str] = os.environ) -> None:
    """Apply `tracker_http_settings` to this process's MLflow client, except any the user set."""
    for key, value in tracker_http_settings().items():
        environ.setdefault(key, value)
