"""The config package's rooms and the CLI's doors: who imports whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def loaded_after(statement: str) -> set[str]:
    """The project's modules in sys.modules after `statement`, in a fresh interpreter."""
    probe = (
        f"{statement}\nimport sys\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('gateway', 'agents')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


class TestTheModelStandsAlone:
    @pytest.mark.parametrize(
        "room", ["loader", "schema", "overrides", "view", "patch", "apply", "secret_keys"]
    )
    def test_importing_the_model_loads_no_other_room(self, room: str) -> None:
        assert f"gateway.config.{room}" not in loaded_after("import gateway.config.model")


class TestTheCommandLine:
    def test_only_the_entry_point_imports_the_cli(self) -> None:
        # ast.walk: an import inside a function counts too (it used to hide client <-> cli).
        importers = sorted(
            str(path.relative_to(GATEWAY))
            for path in GATEWAY.rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if (isinstance(node, ast.ImportFrom) and node.module == "gateway.cli")
            or (isinstance(node, ast.Import) and any(a.name == "gateway.cli" for a in node.names))
        )
        assert importers == ["__main__.py"]

    def test_the_config_commands_do_not_load_the_server(self) -> None:
        assert "gateway.server" not in loaded_after("import gateway.cli")
