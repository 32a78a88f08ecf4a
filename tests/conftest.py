"""What every test process shares: a private Ray temp dir, the integration group, two fixtures.

* Each test process (each pytest-xdist worker too) gets its own `RAY_TMPDIR` and no
  `RAY_ADDRESS`, so a Ray it starts, in-process or in a sweep subprocess that inherits the
  environment, never joins another Ray on the machine (another worker's, another user's
  `ray start`); the folder is removed when the process ends.
* Marks (registered in pyproject.toml): `slow` (integration tests, seconds to minutes each),
  `ray` (starts Ray), `server` (starts an MLflow server or `sparsesweep ui`), `browser` (drives
  headless Chromium). Under `pytest -n N --dist loadgroup --no-loadscope-reorder` (`make test`)
  the tests marked `ray`, `server` or `browser` form one xdist group per module, or per module
  and parameter set where a test is parametrized (`test_faults.py:train`: what shares a
  module-scoped fixture stays on one worker), queued longest first (`INTEGRATION_SECONDS`), so
  both workers start on the long sweeps and the quick tests fill the gaps.
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
INTEGRATION_SECONDS: dict[str, float] = {
    "test_sweep_e2e.py:train": 720,
    "test_tracking_e2e.py": 520,
    "test_multinode.py": 430,
    "test_faults.py:train": 400,
    "test_sweep_e2e.py:actor": 300,
    "test_tracking_postgres.py": 300,
    "test_faults.py:actor": 180,
    "test_executors.py": 160,
    "test_sweep_shards.py": 160,
    "test_adaptive_sweep_e2e.py": 140,
    "test_faults.py": 130,
    "test_sweep_extend.py": 120,
    "test_sweep_output.py": 100,
    "test_dashboard.py": 70,
    "test_search.py": 70,
    "test_trainable.py": 60,
}
"""Seconds each integration group took in a full `make test` on a loaded 2-core machine
(2026-12-02, BENCHMARKS.md): only the order the groups are queued in (longest first), never a
limit; a group not listed counts as `DEFAULT_GROUP_SECONDS`."""
DEFAULT_GROUP_SECONDS = 60.0
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


def integration_group(item: pytest.Item) -> str | None:
    """The xdist group of an integration test: its module, plus its parameter set if it has one
    (`test_faults.py:train`; None for a test that starts no Ray, server or browser). No `]` in
    the name: xdist reads `<id>@<group>` as a group only when the `@` comes after the last `]`."""
    if not any(item.get_closest_marker(mark) for mark in INTEGRATION_MARKS):
        return None
    module = item.path.name
    callspec = getattr(item, "callspec", None)
    return module if callspec is None else f"{module}:{callspec.id}"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Group the integration tests and queue them longest first, before xdist reads the marks;
    then make the grouped node ids (`<id>@<group>`) that xdist writes into `item._nodeid` the real
    ones: pytest 9.2 reads a node's id from `item._id`, so without this `--dist loadgroup`
    silently spreads a group over all workers (pytest-xdist issue 1386, fixed by its PR 1388;
    then xdist leaves `_nodeid` unset and this does nothing)."""
    if config.pluginmanager.hasplugin("xdist"):
        groups = {item.nodeid: integration_group(item) for item in items}
        for item in items:
            if groups[item.nodeid] is not None:
                item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))

        def queue_position(item: pytest.Item) -> tuple[int, float]:
            group = groups[item.nodeid]
            if group is None:
                return (1, 0.0)
            return (0, -INTEGRATION_SECONDS.get(group, DEFAULT_GROUP_SECONDS))

        items.sort(key=queue_position)  # stable: a group's tests keep their order
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
