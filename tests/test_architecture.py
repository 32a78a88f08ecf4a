"""The house rules, checked on the source: no import circle anywhere, and no arrow that points up.

Every import counts, also those inside functions and under `TYPE_CHECKING`: a lazy import is
still a dependency. The layers and rooms are the ones `docs/architecture.md` draws.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contract", "sparseopt", "trainables", "analysis", "sweeps")

ALLOWED_PACKAGES: dict[str, set[str]] = {
    "contract": {"contract"},
    "sparseopt": {"contract", "sparseopt"},
    "trainables": {"contract", "sparseopt", "trainables"},
    "analysis": {"contract", "analysis"},
    "sweeps": set(PACKAGES),
}
"""Which of the project's packages each package may import (sweeps → trainables → sparseopt;
analysis reads records only; contract is beneath all)."""

FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "sparseopt": {"ray", "optuna", "mlflow"},
    "trainables": {"optuna", "mlflow"},
    "analysis": {"torch", "torchvision", "ray"},
}

SWEEPS_ROOMS: tuple[str, ...] = (
    "sweeps.spec",
    "sweeps.run.tune_state",
    "sweeps.tracking",
    "sweeps.run",
    "sweeps.cli",
)
"""The rooms of `sweeps/`, lowest first: a module imports only from its own room or lower ones.
`sweeps.run.tune_state`, the one reader of Tune's saved trials, sits below the tracker."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every module of the five packages, by dotted name."""
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imported_names(name: str, path: Path) -> set[str]:
    """Dotted names a module imports (absolute; relative imports resolved)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_names(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _libraries(name: str, path: Path) -> set[str]:
    return {imported.split(".")[0] for imported in _imported_names(name, path) if imported}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def room(module: str) -> int | None:
    """Rank of a sweeps module's room, by its most specific prefix (None outside the rooms)."""
    matches = [
        (len(prefix), rank)
        for rank, prefix in enumerate(SWEEPS_ROOMS)
        if module == prefix or module.startswith(f"{prefix}.")
    ]
    return max(matches)[1] if matches else None


def test_no_import_cycle() -> None:
    assert import_cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_packages_import_downward_only() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] not in ALLOWED_PACKAGES[module.split(".")[0]]
    ]
    assert upward == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN_LIBRARIES))
def test_forbidden_libraries(package: str) -> None:
    found = [
        f"{name} imports {library}"
        for name, path in project_modules().items()
        if name.split(".")[0] == package
        for library in _libraries(name, path) & FORBIDDEN_LIBRARIES[package]
    ]
    assert found == []


def test_contract_is_stdlib_only() -> None:
    outside = [
        f"{name} imports {library}"
        for name, path in project_modules().items()
        if name.split(".")[0] == "contract"
        for library in _libraries(name, path)
        if library not in sys.stdlib_module_names and library not in ("contract", "__future__")
    ]
    assert outside == []


def test_sweeps_rooms_import_downward_only() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if room(module) is not None
        for target in targets
        if room(target) is not None and room(target) > room(module)
    ]
    assert upward == []


def test_every_sweeps_module_is_in_a_room() -> None:
    loose = [
        name
        for name in project_modules()
        if name.startswith("sweeps.") and name != "sweeps.__main__" and room(name) is None
    ]
    assert loose == []
