"""The import graph: no circles, and packages import downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "latency_models", "search_spaces")

# Lower layers first: a module may import its own layer and the ones before it.
LAYERS = {
    "latency_models": [
        {"_errors", "_home", "_registry", "_graph"},
        {"runtimes"},
        {"devices"},
        {"measurement"},
        {"features"},
        {"predictors"},
        {"profiling"},
        {"agent", "__init__"},
    ],
    "nas": [
        {"_errors", "_objectives", "_version", "logging"},
        {"tasks"},
        {"searching"},
        {"results"},
        {"cli", "__init__", "__main__"},
    ],
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports, lazy ones included, type-checking ones left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_circle_check_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(package: str, module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != package:
        return None
    first = parts[1] if len(parts) > 1 else "__init__"
    for i, layer in enumerate(LAYERS[package]):
        if first in layer:
            return i
    raise AssertionError(f"{module} is in no layer of {package}: add it to LAYERS")


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_import_downwards(package: str) -> None:
    upward = []
    for module, targets in _graph().items():
        here = _layer(package, module)
        if here is None:
            continue
        for target in targets:
            there = _layer(package, target)
            if there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert upward == []
