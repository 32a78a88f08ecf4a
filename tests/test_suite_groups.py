"""The xdist groups `make test` relies on (tests/conftest.py): a parametrized integration test's
group survives xdist's parsing of `<node id>@<group>`, so what shares a module-scoped fixture
runs on one worker (a group name ending in `]` was silently ignored, and both workers ran the
train executor's faulty sweep)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import INTEGRATION_SECONDS, integration_group
from xdist.scheduler.loadgroup import LoadGroupScheduling


@dataclass
class CallSpec:
    id: str


@dataclass
class Item:
    """What `integration_group` reads of a pytest item."""

    path: Path
    marks: tuple[str, ...]
    callspec: CallSpec | None = None

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


def xdist_scope(nodeid: str) -> str:
    """The scope xdist's loadgroup scheduler reads from a grouped node id."""
    return LoadGroupScheduling._split_scope(None, nodeid)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("item", "group"),
    [
        (
            Item(Path("tests/test_faults.py"), ("slow", "ray"), CallSpec("train")),
            "test_faults.py:train",
        ),
        (Item(Path("tests/test_faults.py"), ("ray", "server")), "test_faults.py"),
        (Item(Path("tests/test_dashboard.py"), ("browser",)), "test_dashboard.py"),
        (Item(Path("tests/test_spec.py"), ("slow",), CallSpec("x")), None),
    ],
)
def test_an_integration_test_keeps_its_group_through_xdist(item: Item, group: str | None) -> None:
    assert integration_group(item) == group
    if group is not None:
        nodeid = f"tests/{item.path.name}::test_case[{item.callspec.id if item.callspec else ''}]"
        assert xdist_scope(f"{nodeid}@{group}") == group


def test_every_queued_group_name_is_one_xdist_reads_as_a_group() -> None:
    for group in INTEGRATION_SECONDS:
        assert xdist_scope(f"tests/{group.split(':')[0]}::test_case[p]@{group}") == group
        assert Path("tests", group.split(":")[0]).exists(), group
