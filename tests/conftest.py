"""What every test process shares: a private Ray temp dir, the integration group, two fixtures.

* Each test process (each pytest-xdist worker too) gets its own `RAY_TMPDIR` and no
  `RAY_ADDRESS`, so a Ray it starts, in-process or in a sweep subprocess that inherits the
  environment, never joins another Ray on the machine (another worker's, another user's
  `ray start`); the folder is removed when the process ends.
* Marks (registered in pyproject.toml): `slow` (integration tests, seconds to minutes each),
  `ray` (starts Ray), `server` (starts an MLflow server or `sparsesweep ui`), `browser` (drives
  headless Chromium). Under `pytest -n N --dist loadgroup` (`make test`) every test marked
  `ray`, `server` or `browser` joins one xdist group, so a single worker runs them one after
  the other (they share the session's Ray and would otherwise fight over the CPUs) while the
  other workers run the rest.
* Fixtures: `mlflow_uri` (an empty migrated MLflow store in the test's `tmp_path`) and
  `local_ray` (one local Ray for the whole session, for tests that call Ray in-process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_store import empty_store

INTEGRATION_MARKS = ("ray", "server", "browser")
INTEGRATION_GROUP = "integration"
_RAY_TMPDIR: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """A private Ray temp dir for this process (short: Ray's socket paths stay < 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    _RAY_TMPDIR.append(directory)
    os.environ["RAY_TMPDIR"] = directory
    os.environ.pop("RAY_ADDRESS", None)
    # The tracker's end-of-sweep wait for MLflow (30 s by default) can run out on a busy
    # machine although the test's store is up; tests of the limit itself set it themselves.
    os.environ.setdefault("SPARSESWEEP_MLFLOW_DRAIN_S", "600")


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _RAY_TMPDIR:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Mark the integration tests with the xdist group before xdist reads the marks, and make
    the grouped node ids (`<id>@integration`) that xdist writes into `item._nodeid` the real ones
    afterwards: pytest 9.2 reads a node's id from `item._id`, so without this `--dist loadgroup`
    silently spreads the group over all workers (pytest-xdist issue 1386, fixed by its PR 1388;
    then xdist leaves `_nodeid` unset and this does nothing)."""
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if any(item.get_closest_marker(mark) for mark in INTEGRATION_MARKS):
                item.add_marker(pytest.mark.xdist_group(INTEGRATION_GROUP))
    result = yield
    for item in items:
        grouped = getattr(item, "_nodeid", None)
        if grouped is not None and grouped != item.nodeid:
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(grouped)
    return result


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """`sqlite:///<tmp_path>/mlflow.db`, already holding an empty migrated store."""
    return empty_store(tmp_path / "mlflow.db")


@pytest.fixture(scope="session")
def _session_ray() -> Iterator[None]:
    """Shuts down, at the end of the session, the Ray `local_ray` started."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def local_ray(_session_ray: None) -> None:
    """One local Ray (2 CPUs) for every in-process Ray test of the session, started by the first
    and started again only if its node has died (a raylet can miss the GCS's heartbeat on an
    overloaded machine). Each test that uses it runs its own Tune or Train run to its end, so
    nothing of one test (actors, placement groups) is left for the next."""
    import ray

    if ray.is_initialized():
        try:
            if all(node["Alive"] for node in ray.nodes()):
                return
        except Exception:  # the GCS itself is gone: start over
            pass
        ray.shutdown()
    ray.init(address="local", num_cpus=2, log_to_driver=False)
