"""A TCP relay to PostgreSQL that passes everything, except that it holds back what a client
sends from the first time it sends `marker` (a statement's text) until `release()`: the
client waits there, between its statements, for as long as the test needs to change the
database under it. Deterministic where a sleep between two statements would not be.
Threads, as tests/support/held_relay.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.support.held_relay import CHUNK, pump


class StatementRelay:
    def __init__(self, host: str, port: int, marker: bytes, *, every: bool = False) -> None:
        """`every`: each send holding `marker`, on any connection, is held, not the first
        alone (`wait_held`'s `count` says how many)."""
        self.host, self.port, self.marker = host, port, marker
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._holds = threading.Condition(self._lock)
        self._holding = 0  # sends held so far
        self._open: list[socket.socket] = []
        self._armed, self._every = True, every
        self.held = threading.Event()  # a client sent the marker and waits
        self._released = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, pg_url: str) -> str:
        """`pg_url` (on host:port) through the relay."""
        return pg_url.replace(f"{self.host}:{self.port}", f"127.0.0.1:{self.listen_port}")

    async def wait_held(self, timeout: float = 15.0, count: int = 1) -> None:
        """Until a client has sent the marker (it now waits for its answer); with `every`,
        until `count` sends of it are held."""
        if count == 1:
            reached = await asyncio.to_thread(self.held.wait, timeout)
        else:

            def held_so_many() -> bool:
                with self._holds:
                    return self._holds.wait_for(lambda: self._holding >= count, timeout)

            reached = await asyncio.to_thread(held_so_many)
        if not reached:
            raise AssertionError(f"{self.marker!r} not sent {count} time(s) within {timeout}s")

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._closed = True
        self._released.set()
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((self.host, self.port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:  # connected as `close` ran: it closed what it found open
                    client.close()
                    server.close()
                    return
                self._open += [client, server]
            self._relay(client, server)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        """One connection's two pumps: the client's sends, held at `marker`, and the answers."""
        threading.Thread(target=self._pump_out, args=(client, server), daemon=True).start()
        threading.Thread(target=pump, args=(server, client), daemon=True).start()

    def _pump_out(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    hold = self._armed and self.marker in data
                    if hold:
                        self._armed = self._every
                        self._holding += 1
                        self._holds.notify_all()
                if hold:
                    self.held.set()
                    self._released.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@contextlib.contextmanager
def statement_relay(
    host: str, port: int, marker: bytes, *, every: bool = False
) -> Iterator[StatementRelay]:
    relay = StatementRelay(host, port, marker, every=every)
    try:
        yield relay
    finally:
        relay.close()


class ReplyRelay(StatementRelay):
    """As StatementRelay, but what it holds is the server's answer: the first client send
    holding `marker` on a connection that sent `after` before goes to the server, and what the
    server sends back on that connection waits until `release()`. The statement (a COMMIT)
    takes effect; the client does not learn it did, as when a process stops in the middle of
    its round trip."""

    def __init__(self, host: str, port: int, marker: bytes, *, after: bytes) -> None:
        self.after = after
        super().__init__(host, port, marker)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        hold = threading.Event()  # this connection's answers wait from now on
        threading.Thread(target=self._watch_out, args=(client, server, hold), daemon=True).start()
        threading.Thread(target=self._pump_back, args=(server, client, hold), daemon=True).start()

    def _watch_out(self, source: socket.socket, sink: socket.socket, hold: threading.Event) -> None:
        seen_after = False
        try:
            while data := source.recv(CHUNK):
                seen_after = seen_after or self.after in data
                with self._lock:
                    armed = self._armed and seen_after and self.marker in data
                    if armed:
                        self._armed = False
                if armed:
                    hold.set()
                sink.sendall(data)
                if armed:
                    self.held.set()
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pump_back(self, source: socket.socket, sink: socket.socket, hold: threading.Event) -> None:
        try:
            while data := source.recv(CHUNK):
                if hold.is_set():
                    self._released.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class DroppingRelay(ReplyRelay):
    """As ReplyRelay, but the server's answer is dropped, not held: the connection is closed
    both ways when it comes. The statement took effect; its client finds the database gone
    (and connects again for its next statement)."""

    def _pump_back(self, source: socket.socket, sink: socket.socket, hold: threading.Event) -> None:
        try:
            while data := source.recv(CHUNK):
                if hold.is_set():
                    for each in (source, sink):
                        with contextlib.suppress(OSError):
                            each.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HeldSendRelay(ReplyRelay):
    """As ReplyRelay, but what it holds is the client's send itself (`marker` on a connection
    that sent `after` before), until `release()`: a statement on its way to the server, as a
    COMMIT a busy server has not done yet is. `watched` is set once any connection sends
    `watch` (passed on at once)."""

    def __init__(self, host: str, port: int, marker: bytes, *, after: bytes, watch: bytes) -> None:
        self.watch = watch
        self.watched = threading.Event()
        super().__init__(host, port, marker, after=after)

    def _watch_out(self, source: socket.socket, sink: socket.socket, hold: threading.Event) -> None:
        seen_after = False
        try:
            while data := source.recv(CHUNK):
                seen_after = seen_after or self.after in data
                with self._lock:
                    armed = self._armed and seen_after and self.marker in data
                    if armed:
                        self._armed = False
                if armed:
                    self.held.set()
                    self._released.wait()
                if self.watch in data:
                    self.watched.set()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pump_back(self, source: socket.socket, sink: socket.socket, hold: threading.Event) -> None:
        pump(source, sink)


class CuttingRelay(StatementRelay):
    """As StatementRelay, and the connection that first sends `cut` is closed, both ways,
    before that send reaches the server: the statement fails as on a database that went away
    (or a network that failed) under it, and its client finds the database unreachable."""

    def __init__(self, host: str, port: int, marker: bytes, *, cut: bytes) -> None:
        self.cut = cut
        self._cut_armed = True
        super().__init__(host, port, marker)

    def _pump_out(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    cutting = self._cut_armed and self.cut in data
                    if cutting:
                        self._cut_armed = False
                    hold = not cutting and self._armed and self.marker in data
                    if hold:
                        self._armed = False
                if cutting:
                    for each in (source, sink):
                        with contextlib.suppress(OSError):
                            each.shutdown(socket.SHUT_RDWR)
                    return
                if hold:
                    self.held.set()
                    self._released.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
