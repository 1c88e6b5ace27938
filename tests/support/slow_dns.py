"""A DNS server that takes the queries and never answers, and a command prefix that runs a
program with it as its only resolver: what a `lan` bind's lookup of its names meets when the
network's DNS is away (each try waits up to 30 s, several tries and names: minutes)."""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# In a mount and UTS namespace of its own: a resolv.conf naming `$1` as the only DNS server,
# and a host name no hosts file knows, so the lookup of the host's names asks that server.
_SLOW_RESOLVER = (
    'echo "nameserver $1" > "$2" && mount --bind "$2" /etc/resolv.conf'
    ' && hostname clawgate-unknown-host && shift 2 && exec "$@"'
)
# Each try waits 30 s (the resolver's longest), and 5 tries (its most) per query.
SLOW_RES_OPTIONS = {"RES_OPTIONS": "timeout:30 attempts:5"}


class SilentDns:
    def __init__(self, sock: socket.socket, prefix: list[str]) -> None:
        self.socket = sock
        self.prefix = prefix  # what follows it runs with this server as its resolver

    def wait_query(self, timeout: float = 30) -> None:
        """Until a lookup asks: its first query came."""
        self.socket.settimeout(timeout)
        self.socket.recvfrom(512)


@contextmanager
def silent_dns(tmp_path: Path) -> Iterator[SilentDns]:
    """Skips the test where the server or the namespaces cannot be made (not root)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.1"
    try:
        server.bind((address, 53))
    except OSError as exc:
        server.close()
        pytest.skip(f"no DNS server can be made here: {exc}")
    try:
        resolv = tmp_path / "resolv.conf"
        prefix = ["unshare", "--mount", "--uts", "sh", "-c", _SLOW_RESOLVER, "sh"]
        prefix += [address, str(resolv)]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"no namespace of its own here: {probe.stderr.strip()}")
        yield SilentDns(server, prefix)
    finally:
        server.close()
