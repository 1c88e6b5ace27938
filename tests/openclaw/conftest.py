"""OpenClaw's own command line and terminal UI (the `openclaw` npm package) against a real
`clawgate run` subprocess.

`scripts/install-openclaw-clients` installs them (and the Node.js they need) from npm. Without
them the tests skip with a line that says so; with `CLAWGATE_REQUIRE_OPENCLAW=1` (set by
`.ci/run`) they fail instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tests.support.browser import drain
from tests.support.openclaw_clients import CONFIG, INSTALL_HINT, OpenClaw, find_openclaw
from tests.support.process import GatewayProcess, run_on_config


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
    root = tmp_path_factory.mktemp("openclaw-gateway")
    config = root / "clawgate.json5"
    config.write_text(CONFIG)
    process = run_on_config(root, config)
    stop = threading.Event()
    # Its log goes to a pipe: read it all the time, or a full pipe blocks the gateway's loop.
    reader = threading.Thread(target=drain, args=(process, stop), daemon=True)
    try:
        process.wait_listening()
        reader.start()
        yield process
    finally:
        stop.set()
        if reader.is_alive():
            reader.join(5)
        process.stop()
