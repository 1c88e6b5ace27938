"""OpenClaw's own command line and terminal UI (the `openclaw` npm package) against a real
`clawgate run` subprocess.

`scripts/install-openclaw-clients` installs them (and the Node.js they need) from npm. Without
them the tests skip with a line that says so; with `CLAWGATE_REQUIRE_OPENCLAW=1` (set by
`.ci/run`) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.openclaw_clients import CONFIG, INSTALL_HINT, OpenClaw, find_openclaw
from tests.support.process import GatewayProcess, served


@pytest.fixture(scope="module")
def openclaw(tmp_path_factory: pytest.TempPathFactory) -> OpenClaw:
    found = find_openclaw(tmp_path_factory.mktemp("openclaw-home"))
    if isinstance(found, str):
        if os.environ.get("CLAWGATE_REQUIRE_OPENCLAW"):
            pytest.fail(f"OpenClaw's clients required, but {found}")
        pytest.skip(f"{found}; to run these tests: {INSTALL_HINT}")
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with served(tmp_path_factory.mktemp("openclaw-gateway"), CONFIG) as process:
        yield process
