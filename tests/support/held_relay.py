"""A TCP relay that accepts connections and holds them, passing nothing, until `release()`:
then each goes on to the server as if it had only been slow. What a database behind a slow
network, or a server still starting, looks like to a client that connects to it. Threads, so
a synchronous test that waits on a subprocess can use it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

CHUNK = 65536


class HeldRelay:
    def __init__(self, host: str, port: int, *, pass_first: int = 0) -> None:
        """pass_first: so many connections go on to the server at once; the later ones are
        held (a database that stops answering new connections after the first ones)."""
        self.host, self.port = host, port
        self._pass_first = pass_first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._open: list[socket.socket] = []
        self._released = False
        self.accepted = threading.Semaphore(0)  # one release per connection accepted
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def wait_accepted(self, timeout: float = 15.0) -> None:
        """Until a client has connected (it now waits for the server's first byte)."""
        if not self.accepted.acquire(timeout=timeout):
            raise AssertionError(f"no connection to the relay within {timeout}s")

    def release(self) -> None:
        """The held connections, and every later one, go on to the server."""
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for client in held:
            self._relay(client)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in (*self._held, *self._open):
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:  # accepted as `close` ran: it closed what it found open
                    client.close()
                    return
                self._open.append(client)
                released = self._released or self._pass_first > 0
                self._pass_first -= 1
                if not released:
                    self._held.append(client)
            self.accepted.release()
            if released:
                self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection((self.host, self.port))
        except OSError:
            client.close()
            return
        with self._lock:
            if self._closed:
                server.close()
                return
            self._open.append(server)
        threading.Thread(target=pump, args=(client, server), daemon=True).start()
        threading.Thread(target=pump, args=(server, client), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Passes what `source` sends on to `sink` until it ends (or either fails)."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@contextlib.contextmanager
def held_relay(host: str, port: int, *, pass_first: int = 0) -> Iterator[HeldRelay]:
    relay = HeldRelay(host, port, pass_first=pass_first)
    try:
        yield relay
    finally:
        relay.close()
