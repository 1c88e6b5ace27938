"""The README's examples, run as written: its sections, code blocks, and a shell command
pointed at a test gateway."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.process import GatewayProcess

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TOKEN = "readme-gateway-token-1f0c"


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def run(command: str, gateway: GatewayProcess) -> str:
    command = command.replace("YOUR_TOKEN", TOKEN).replace("18789", str(gateway.port))
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout
