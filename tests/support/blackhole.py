"""A TCP relay to a server that can swallow the connections it carries: what a network
partition, or a firewall that forgot its connections, does to a client. After `swallow()` the
connections open so far stay open on the client's side and nothing more passes on them either
way, as if the packets were lost; connections opened later pass as before (with `server_too`,
the server's side stays open as well, as across a real partition: the server finds out only by
its keepalives). After `lose_ends()`
a connection the server ends passes what the server said last but not its end: the client's
side stays open."""

from __future__ import annotations

import asyncio
import contextlib

_CHUNK = 65536


class Blackhole:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._relays: set[asyncio.Task[None] | None] = set()
        # Swallowed connections' writers: kept open, never written or closed until aclose().
        self._swallowed: list[asyncio.StreamWriter] = []
        self.server_ports: set[int] = set()  # our side of the connections to the server
        self._ends_lost = False
        self._server_side_kept = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    def lose_ends(self) -> None:
        """From now on, the server's end of a connection does not reach its client."""
        self._ends_lost = True

    def swallow(self, *, server_too: bool = False) -> None:
        """The connections open now: nothing passes on them any more, none is closed on the
        client's side (nor, with `server_too`, on the server's)."""
        self._server_side_kept = server_too
        for task in self._pumps:
            task.cancel()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        self._relays.add(relay)
        try:
            await self._pass(client_r, client_w)
        finally:
            self._relays.discard(relay)

    async def _pass(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_w.close()
            return
        self.server_ports.add(server_w.get_extra_info("sockname")[1])
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._pump(server_r, client_w, to_client=True)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.gather(*pumps)
        except asyncio.CancelledError:
            # Swallowed: the client's side stays open, as a peer gone from the network does.
            self._swallowed.append(client_w)
            if self._server_side_kept:
                self._swallowed.append(server_w)
            else:
                server_w.close()
            return
        finally:
            self._pumps.difference_update(pumps)
        server_w.close()
        if self._ends_lost:
            self._swallowed.append(client_w)
        else:
            client_w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_client: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError):  # the other side is gone: so is this pump
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        if to_client and self._ends_lost:
            return
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.swallow()
        relays = [relay for relay in self._relays if relay is not None]
        if relays:
            await asyncio.wait(relays)
        for writer in self._swallowed:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
