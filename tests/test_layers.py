"""The layers of ARCHITECTURE.md, read from the source.

Every import counts: at module level, inside functions and under `if TYPE_CHECKING:`; an
import hidden in a function is still a door both ways. Implicit imports of parent packages are
not edges (importing `gateway.ws.protocol` runs `gateway/ws/__init__.py`, which imports none of
its children). The import-linter contracts in setup.cfg say the same of the layers; the last
test shows that they bite.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "agents")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name `module` imports, relative imports resolved; for `from a import b`
    both `a` and `a.b`."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        names = set(imported_names(name, path))
        # `from gateway.ws import protocol` names the module gateway.ws.protocol; then the
        # package itself is not imported for it.
        graph[name] = {n for n in names if n in modules and n != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class TestImportGraph:
    def test_sees_the_project(self) -> None:
        graph = import_graph()
        assert "agents.registry" in graph["gateway.app"]
        assert "gateway.ws.protocol" in graph["gateway.ws.handler"]

    def test_no_import_cycle_among_the_modules_of_gateway_and_agents(self) -> None:
        assert cycles(import_graph()) == []

    def test_a_cycle_is_found_where_there_is_one(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert cycles(graph) == [["a", "b", "c"]]


class TestAgentsStayBelow:
    def test_agents_never_imports_the_gateway_nor_aiohttps_server(self) -> None:
        upward = {
            module: sorted(
                n
                for n in imported_names(module, path)
                if n.split(".")[0] == "gateway" or n.startswith("aiohttp.web")
            )
            for module, path in project_modules().items()
            if module.startswith("agents")
        }
        assert {module: names for module, names in upward.items() if names} == {}

    def test_lint_imports_fails_when_an_agents_module_imports_the_gateway(
        self, tmp_path: Path
    ) -> None:
        """The contracts bite: a copy of the tree where agents/keys.py imports gateway."""
        for name in (*PACKAGES, "setup.cfg"):
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("ui"))
            else:
                shutil.copy(source, tmp_path / name)
        keys = tmp_path / "agents" / "keys.py"
        keys.write_text(keys.read_text(encoding="utf-8") + "\nimport gateway  # noqa\n")
        lint_imports = Path(sys.executable).with_name("lint-imports")
        result = subprocess.run(
            [str(lint_imports), "--no-cache"],
            cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "gateway sits above agents; agents never imports gateway BROKEN" in result.stdout
        assert "agents.keys -> gateway" in result.stdout
