"""A turn lock whose holder the network cut off: the subject of test_store_postgres.py's
TestAHolderCutOffByTheNetwork.

Usage: unshare --net python -m tests.agents.partition_child <seconds to wait> idle|at-once
       [<server settings of the holder's connections, as a URL query>]

In a network namespace of its own (its addresses, routes and PostgreSQL server go with it):
the holder store reaches the server at an address of its own, HOLDER_ADDRESS, and takes a
session's turn lock; then that address goes, and a blackhole route swallows what the server
sends there, as a partition does: no FIN or RST ever reaches the server, and nothing answers
its packets. Times how long a second store, on 127.0.0.1, waits for the lock. Prints
`TAKEN <seconds>`, or `WAITING` when it still waits after <seconds to wait>. `idle`: the cut
comes once the lock's reply was acknowledged (the server's keepalives must find it); `at-once`:
right after the reply, which the holder's delayed ACK leaves unacknowledged (retransmissions).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

from agents.store_postgres import PostgresSessionStore
from tests.support.pgserver import PgServer, find_bindir
from tests.support.turns import KEY


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


HOLDER_ADDRESS = "10.89.0.1"


class TwoAddressServer(PgServer):
    """A server that listens on HOLDER_ADDRESS too."""

    def _pg_ctl(self, action: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1,{HOLDER_ADDRESS}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        args = ["-D", str(self.data), "-w", "-t", "60", "-m", "fast"]
        if action != "stop":
            args += ["-o", options, "-l", str(self.root / "server.log")]
        self._run(str(self.bindir / "pg_ctl"), action, *args)


def cut_off() -> None:
    run("ip", "address", "del", f"{HOLDER_ADDRESS}/32", "dev", "lo")
    run("ip", "route", "add", "blackhole", f"{HOLDER_ADDRESS}/32")


async def main(wait_s: float, mode: str, url: str, query: str) -> None:
    holder_url = url.replace("@127.0.0.1:", f"@{HOLDER_ADDRESS}:")
    holder = PostgresSessionStore(f"{holder_url}?{query}" if query else holder_url)
    waiter = PostgresSessionStore(url)
    await holder.open()
    await waiter.open()
    holding = asyncio.Event()

    async def hold() -> None:
        async with holder.turn_lock(KEY):
            holding.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(holding.wait(), 10)
        if mode == "idle":
            await asyncio.sleep(2)  # loopback's delayed ACKs are gone by then
        cut_off()
        started = time.monotonic()
        try:
            async with asyncio.timeout(wait_s):
                async with waiter.turn_lock(KEY):
                    print(f"TAKEN {time.monotonic() - started:.1f}", flush=True)
        except TimeoutError:
            print("WAITING", flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await waiter.aclose()
        await holder.aclose()


if __name__ == "__main__":
    run("ip", "link", "set", "lo", "up")
    run("ip", "address", "add", f"{HOLDER_ADDRESS}/32", "dev", "lo")
    bindir = find_bindir()
    assert bindir is not None
    server = TwoAddressServer(bindir)
    server.start()
    try:
        with (server.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {HOLDER_ADDRESS}/32 scram-sha-256\n")
        server.admin("SELECT pg_reload_conf()")
        server.admin("CREATE DATABASE partition TEMPLATE template0")
        query = sys.argv[3] if len(sys.argv) > 3 else ""
        asyncio.run(main(float(sys.argv[1]), sys.argv[2], server.url("partition"), query))
    finally:
        server.stop()
