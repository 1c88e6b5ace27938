"""The agents package's imports, read from the source (TYPE_CHECKING and function-level
imports count too): no cycle among its modules, and never the gateway above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` and every dotted name it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = names
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, as a path back to its start."""
    edges = {m: sorted(n for n in names if n in graph and n != m) for m, names in graph.items()}
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in edges[module]:
            cycle = visit(target)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in edges:
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


class TestAgentsImports:
    def test_no_import_cycle_among_the_agents_modules(self) -> None:
        assert find_cycle(module_imports("agents")) is None

    def test_the_agents_layer_never_imports_the_gateway(self) -> None:
        upward = {
            module: sorted(n for n in names if n == "gateway" or n.startswith("gateway."))
            for module, names in module_imports("agents").items()
        }
        assert {m: names for m, names in upward.items() if names} == {}

    def test_a_cycle_is_found_where_there_is_one(self) -> None:
        graph = {"a": {"b"}, "b": {"c.x", "c"}, "c": {"a", "os"}}
        assert find_cycle(graph) == ["a", "b", "c", "a"]
