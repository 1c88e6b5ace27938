"""Presence (ws-protocol.md §8, §9.2): the book's order, reconnects and retention; `presence`
events coalesced to one per interval; events and snapshots bounded, `system-presence` whole."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gateway.ws.presence import DISCONNECTED_MAX, DISCONNECTED_RETENTION_MS, PresenceBook
from gateway.ws.protocol import ClientInfo
from gateway.ws.state import WsSettings
from tests.support.ws_client import Gateway, GatewayWs, MakeGateway


def client(name: str, instance: str | None = None) -> ClientInfo:
    return ClientInfo(name, "1.0", "linux", "cli", instance_id=instance)


def client_params(name: str) -> dict[str, Any]:
    return {"id": name, "version": "1.0", "platform": "linux", "mode": "cli"}


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [entry.get("clientId", entry["reason"]) for entry in entries]


def is_presence(version: int | None = None) -> Any:
    def match(frame: dict[str, Any]) -> bool:
        return frame.get("event") == "presence" and (
            version is None or frame["stateVersion"]["presence"] == version
        )

    return match


class TestPresenceBook:
    def test_a_close_makes_its_entry_the_newest(self) -> None:
        book = PresenceBook()
        book.connect("c1", client("a"), (), now=1)
        book.connect("c2", client("b"), (), now=2)
        book.disconnect("c1", now=3, last_activity_at=2)
        entries = book.snapshot(now=4)
        assert [(e.get("clientId"), e["reason"]) for e in entries] == [
            (None, "self"),
            ("a", "disconnect"),
            ("b", "connect"),
        ]
        assert book.version == 3

    def test_a_limit_lists_the_newest_clients_after_self(self) -> None:
        book = PresenceBook()
        for i in range(5):
            book.connect(f"c{i}", client(f"n{i}"), (), now=i)
        assert names(book.snapshot(now=9, limit=2)) == ["self", "n4", "n3"]
        assert names(book.snapshot(now=9, limit=0)) == ["self"]

    def test_a_reconnect_replaces_the_disconnected_entry_of_its_instance(self) -> None:
        book = PresenceBook()
        book.connect("c1", client("tui", "i-1"), (), now=1)
        book.connect("c2", client("cli"), (), now=2)
        book.disconnect("c1", now=3, last_activity_at=1)
        book.connect("c3", client("tui", "i-1"), (), now=4)
        entries = book.snapshot(now=5)
        assert [(e.get("instanceId"), e["reason"]) for e in entries[1:]] == [
            ("i-1", "connect"),
            ("c2", "connect"),
        ]

    def test_a_disconnected_entry_is_kept_five_minutes(self) -> None:
        book = PresenceBook()
        book.connect("c1", client("a", "i-1"), (), now=0)
        book.connect("c2", client("b"), (), now=1)
        book.disconnect("c1", now=10, last_activity_at=5)
        assert names(book.snapshot(now=10 + DISCONNECTED_RETENTION_MS)) == ["self", "a", "b"]
        assert names(book.snapshot(now=11 + DISCONNECTED_RETENTION_MS)) == ["self", "b"]
        # Forgotten for good: its instance connects again as a new entry.
        book.connect("c3", client("a", "i-1"), (), now=12 + DISCONNECTED_RETENTION_MS)
        assert names(book.snapshot(now=13 + DISCONNECTED_RETENTION_MS)) == ["self", "a", "b"]

    def test_at_most_so_many_disconnected_entries_are_kept(self) -> None:
        """A client in a reconnect loop (a new instance each time, as a connId is) must not
        grow the book, and `system-presence`, for five minutes: the oldest go first."""
        book = PresenceBook()
        book.connect("live", client("live"), (), now=0)
        for i in range(DISCONNECTED_MAX + 10):
            book.connect(f"c{i}", client(f"n{i}"), (), now=1)
            book.disconnect(f"c{i}", now=2, last_activity_at=1)
        entries = book.snapshot(now=3)
        gone = [e["clientId"] for e in entries if e["reason"] == "disconnect"]
        assert len(gone) == DISCONNECTED_MAX
        assert gone[0] == f"n{DISCONNECTED_MAX + 9}" and gone[-1] == "n10"
        assert [e["clientId"] for e in entries if e["reason"] == "connect"] == ["live"]
        book.connect("again", client("n10", "c10"), (), now=4)  # its instance, replaced
        assert len(book.snapshot(now=5)) == 1 + 1 + DISCONNECTED_MAX


class TestPresenceEvents:
    async def test_a_single_connect_reaches_the_others_at_once(
        self, make_gateway: MakeGateway
    ) -> None:
        # A long interval: only an immediate broadcast arrives within the wait.
        gateway = await make_gateway(settings=WsSettings(presence_interval_seconds=60.0))
        observer = await gateway.connected()
        other = await gateway.connected(client=client_params("other"))
        event = await observer.wait_for(is_presence(), wait=1.0)
        assert event["stateVersion"]["presence"] == 2
        assert names(event["payload"]["presence"]) == ["self", "other", "test"]
        await other.ws.close()
        await observer.ws.close()

    async def test_a_burst_of_connects_is_coalesced_into_few_events(
        self, make_gateway: MakeGateway
    ) -> None:
        interval, burst = 0.25, 30
        gateway = await make_gateway(settings=WsSettings(presence_interval_seconds=interval))
        observer = await gateway.connected(client=client_params("observer"))
        started = time.monotonic()
        clients = await asyncio.gather(
            *(gateway.connected(client=client_params(f"c{i}")) for i in range(burst))
        )
        took = time.monotonic() - started
        events = []
        try:
            while True:  # every presence event, until none came for three intervals
                events.append(await observer.wait_for(is_presence(), wait=3 * interval))
        except TimeoutError:
            pass
        last = events[-1]
        # Sent to the observer after its `health` (seq 1), those a newer one replaced in its
        # queue included: one at once, then at most one per interval while connects came.
        sent = last["seq"] - 1
        assert len(events) <= sent <= 2 + int(took / interval) < burst
        assert last["stateVersion"]["presence"] == 1 + burst
        listed = last["payload"]["presence"]
        assert sorted(names(listed)[1:]) == sorted(["observer", *(f"c{i}" for i in range(burst))])
        assert {entry["reason"] for entry in listed[1:]} == {"connect"}
        for ws in (*clients, observer):
            await ws.ws.close()

    async def test_a_client_gets_no_event_for_its_own_connect(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(presence_interval_seconds=0.2))
        first = await gateway.connected()
        second = await gateway.connected()  # broadcast at once, to `first`
        third = await gateway.connected()  # coalesced: to `first` and `second`, at the end
        await first.wait_for(is_presence(3))
        await second.wait_for(is_presence(3))
        # Its hello-ok snapshot is as new as that broadcast: nothing comes.
        seen = [f for f in third.frames if f.get("event") == "presence"]
        with contextlib.suppress(TimeoutError):
            seen.append(await third.wait_for(is_presence(), wait=0.3))
        assert seen == []
        for ws in (first, second, third):
            await ws.ws.close()


class TestPresenceLimit:
    """Six clients, `presence_max_entries` 3."""

    async def six_clients(self, make_gateway: MakeGateway) -> tuple[Gateway, list[GatewayWs]]:
        settings = WsSettings(presence_max_entries=3, presence_interval_seconds=0.05)
        gateway = await make_gateway(settings=settings)
        return gateway, [await gateway.connected(client=client_params(f"c{i}")) for i in range(6)]

    async def test_snapshots_list_self_then_the_newest_clients(
        self, make_gateway: MakeGateway
    ) -> None:
        _, clients = await self.six_clients(make_gateway)
        assert clients[5].hello is not None
        snapshot = clients[5].hello["payload"]["snapshot"]["presence"]
        assert names(snapshot) == ["self", "c5", "c4", "c3"]
        for ws in clients:
            await ws.ws.close()

    async def test_events_list_self_then_the_newest_clients(
        self, make_gateway: MakeGateway
    ) -> None:
        _, clients = await self.six_clients(make_gateway)
        event = await clients[0].wait_for(is_presence(6))
        assert names(event["payload"]["presence"]) == ["self", "c5", "c4", "c3"]
        for ws in clients:
            await ws.ws.close()

    async def test_system_presence_lists_every_client(self, make_gateway: MakeGateway) -> None:
        _, clients = await self.six_clients(make_gateway)
        listed = await clients[0].ok("system-presence")
        assert names(listed) == ["self", "c5", "c4", "c3", "c2", "c1", "c0"]
        for ws in clients:
            await ws.ws.close()
