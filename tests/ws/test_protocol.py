"""The Sans-I/O parts: frames, negotiation, scopes, auth outcomes, the queue policy, merge
patches, the log tail (no server)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import WSMsgType

from gateway.config.patch import MarkerWithoutValue, merge_patch
from gateway.logs import RING_BYTES, RING_LINES, LogRing
from gateway.ws import protocol
from gateway.ws.connection import Connection
from gateway.ws.dispatch import RateLimit, _check_rate
from gateway.ws.methods.system import TailParams, tail
from gateway.ws.protocol import (
    InvalidFrame,
    NotJson,
    WsError,
    event_frame,
    granted_scopes,
    negotiate,
    parse_request,
    scope_allows,
)


class TestFrames:
    def test_a_request(self) -> None:
        frame = parse_request('{"type":"req","id":"1:a","method":"status","params":null}')
        assert (frame.id, frame.method, frame.params) == ("1:a", "status", None)

    @pytest.mark.parametrize(
        ("text", "detail", "frame_id"),
        [
            ("[]", "must be object", None),
            ('{"type":"res","id":"a","method":"m"}', 'at /type: must be "req"', "a"),
            ('{"type":"req","id":7,"method":"m"}', "at /id: must be a non-empty string", None),
            (
                '{"type":"req","id":"%s","method":"m"}' % ("i" * 257),
                "at /id: must have at most 256 characters",
                None,
            ),
            (
                '{"type":"res","id":"%s","method":"m"}' % ("i" * 257),
                'at /type: must be "req"',
                None,
            ),
            ('{"type":"req","id":"a","method":""}', "at /method: must be a non-empty string", "a"),
        ],
    )
    def test_not_a_request(self, text: str, detail: str, frame_id: str | None) -> None:
        with pytest.raises(InvalidFrame) as caught:
            parse_request(text)
        assert (caught.value.detail, caught.value.frame_id) == (detail, frame_id)

    def test_not_json(self) -> None:
        with pytest.raises(NotJson):
            parse_request("this is not json")

    def test_an_event_frame_is_serialised_once_and_takes_any_seq(self) -> None:
        frame = event_frame("health", {"ok": True}, state_version={"presence": 1, "health": 2})
        assert frame.render(7) == (
            b'{"type":"event","event":"health","payload":{"ok":true},"seq":7,'
            b'"stateVersion":{"presence":1,"health":2}}'
        )
        assert event_frame("tick", {"ts": 1}).render(12) == (
            b'{"type":"event","event":"tick","payload":{"ts":1},"seq":12}'
        )

    def test_close_reasons_fit_a_close_frame(self) -> None:
        assert protocol.close_reason("short") == "short"
        cut = protocol.close_reason("é" * 100)
        assert len(cut.encode()) <= 123 and cut == "é" * 61


class TestNegotiation:
    @pytest.mark.parametrize(
        ("low", "high", "version"),
        [(3, 3, 3), (3, 4, 4), (4, 4, 4), (1, 9, 4), (4, 99, 4), (1, 2, None), (5, 9, None)],
    )
    def test_highest_common_version(self, low: int, high: int, version: int | None) -> None:
        assert negotiate(low, high) == version


class TestScopes:
    def test_grants(self) -> None:
        assert granted_scopes(None) == protocol.OPERATOR_SCOPES
        assert granted_scopes(["operator.read", "x"]) == ("operator.read",)
        assert granted_scopes(["operator.questions"]) == ("operator.questions",)

    @pytest.mark.parametrize(
        ("granted", "required", "allowed"),
        [
            (["operator.admin"], "operator.pairing", True),
            (["operator.write"], "operator.read", True),
            (["operator.read"], "operator.write", False),
            (["operator.approvals"], "operator.read", False),
            (["operator.admin"], "operator.questions", True),
            (["operator.read"], "operator.questions", False),
        ],
    )
    def test_checks(self, granted: list[str], required: str, allowed: bool) -> None:
        assert scope_allows(granted, required) is allowed


class TestCallRate:
    """A method's per-connection limit (config.patch's 30 per 60 s) slides: a call counts for
    `window_seconds`, and the refusal says when the oldest one stops counting."""

    async def test_the_oldest_call_stops_counting_after_the_window(self) -> None:
        conn = Connection(None, "c", None, 10_000, 1.0)  # type: ignore[arg-type]
        limit = RateLimit(2, 1)
        started = time.monotonic()
        _check_rate(conn, "m", limit)
        await asyncio.sleep(0.3)
        _check_rate(conn, "m", limit)
        with pytest.raises(WsError) as refused:
            _check_rate(conn, "m", limit)
        since_first_ms = (time.monotonic() - started) * 1000
        assert refused.value.message == "rate limit exceeded for m; retry after 1s"
        retry_ms = refused.value.retry_after_ms  # the first call's end, not the last one's
        assert retry_ms is not None and 1000 - since_first_ms - 1 <= retry_ms <= 700
        await asyncio.sleep(started + 1.05 - time.monotonic())
        _check_rate(conn, "m", limit)  # the first one no longer counts; the second still does
        with pytest.raises(WsError):
            _check_rate(conn, "m", limit)


class _Socket:
    """Stands in for aiohttp's WebSocketResponse: records what the writer sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.close_args: tuple[int, bytes] | None = None
        self.block = asyncio.Event()

    async def send_frame(self, data: bytes, opcode: WSMsgType) -> None:
        await self.block.wait()  # a client that reads nothing
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed, self.close_args = True, (code, message)
        return True


class TestQueuePolicy:
    async def connection(self, limit: int) -> tuple[Connection, _Socket]:
        sock = _Socket()
        conn = Connection(sock, "c", None, limit, 1.0)  # type: ignore[arg-type]
        conn.start()
        await asyncio.sleep(0)
        return conn, sock

    async def test_droppable_frames_are_skipped_leaving_a_seq_gap(self) -> None:
        conn, sock = await self.connection(150)
        conn.send(b"x" * 10)  # taken by the writer, which now blocks
        await asyncio.sleep(0)
        droppable = event_frame("tick", {"ts": 1}, droppable=True)
        for _ in range(5):
            conn.send_event(droppable)  # 57 bytes each: the 3rd does not fit
        assert conn.dropped == 3 and not conn.closing
        sock.block.set()
        await conn.aclose()
        seqs = [int(f.split(b'"seq":')[1].rstrip(b"}")) for f in sock.sent[1:]]
        assert seqs == [1, 2]

    async def test_a_frame_that_must_arrive_closes_a_full_connection(self) -> None:
        conn, sock = await self.connection(100)
        conn.send(b"x" * 10)
        await asyncio.sleep(0)
        conn.send(b"y" * 60)
        conn.send(b"z" * 60)
        assert conn.closing
        await conn.wait_closed()
        assert sock.close_args == (1008, b"slow consumer")
        conn.send(b"after")  # discarded
        assert conn.buffered_bytes == 0

    async def test_a_newer_presence_frame_replaces_an_unsent_one(self) -> None:
        conn, sock = await self.connection(10_000)
        conn.send(b"x" * 10)  # taken by the writer, which now blocks
        await asyncio.sleep(0)
        frames = []
        for version in (1, 2, 3):
            presence = event_frame("presence", {"v": version}, droppable=True, replaces="presence")
            tick = event_frame("tick", {"ts": version}, droppable=True)
            frames += [presence, tick]
            conn.send_event(presence)  # seq 1, 3, 5
            conn.send_event(tick)  # seq 2, 4, 6
        assert conn.dropped == 2
        kept = [(frames[1], 2), (frames[3], 4), (frames[4], 5), (frames[5], 6)]
        assert conn.buffered_bytes == sum(len(f.render(seq)) for f, seq in kept)
        sock.block.set()
        await conn.aclose()
        assert sock.sent[1:] == [f.render(seq) for f, seq in kept]
        assert conn.buffered_bytes == 0

    async def test_a_presence_frame_being_written_is_not_replaced(self) -> None:
        conn, sock = await self.connection(10_000)
        older = event_frame("presence", {"v": 1}, droppable=True, replaces="presence")
        newer = event_frame("presence", {"v": 2}, droppable=True, replaces="presence")
        conn.send_event(older)
        await asyncio.sleep(0)  # the writer takes it, and blocks
        conn.send_event(newer)
        assert conn.dropped == 0 and conn.buffered_bytes == len(newer.render(2))
        sock.block.set()
        await conn.aclose()
        assert sock.sent == [older.render(1), newer.render(2)]

    async def test_an_empty_queue_takes_a_frame_larger_than_the_limit(self) -> None:
        conn, sock = await self.connection(100)
        sock.block.set()
        conn.send(b"x" * 1000)
        await conn.aclose()
        assert sock.sent == [b"x" * 1000] and sock.close_args == (1000, b"")


class TestMergePatch:
    @pytest.mark.parametrize(
        ("target", "patch", "result"),
        [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
            ({"t": "secret"}, {"t": "__OPENCLAW_REDACTED__"}, {"t": "secret"}),
            ({}, {"t": "__OPENCLAW_REDACTED__"}, {}),
            # Inside an array: what the file has at the same index and keys.
            ({"a": ["s", "t"]}, {"a": ["__OPENCLAW_REDACTED__", "u"]}, {"a": ["s", "u"]}),
            (
                {"a": [{"k": "s", "n": 1}]},
                {"a": [{"k": "__OPENCLAW_REDACTED__", "m": "__OPENCLAW_REDACTED__"}, {}]},
                {"a": [{"k": "s"}, {}]},
            ),
            ({"a": [["s"]]}, {"a": [["__OPENCLAW_REDACTED__"]]}, {"a": [["s"]]}),
        ],
    )
    def test_rfc_7396(self, target: Any, patch: Any, result: Any) -> None:
        assert merge_patch(target, patch) == result

    @pytest.mark.parametrize("target", [{}, {"a": "s"}, {"a": ["s"]}, {"a": {"0": "s"}}])
    def test_an_array_member_marker_with_nothing_to_keep_raises(self, target: Any) -> None:
        with pytest.raises(MarkerWithoutValue) as caught:
            merge_patch(target, {"a": ["s", "__OPENCLAW_REDACTED__"]})
        assert caught.value.path == "a[1]"


class TestLogTail:
    def ring(self, *lines: str) -> LogRing:
        ring = LogRing()
        for line in lines:
            ring.append(line)
        return ring

    def test_newest_lines_within_the_limits(self) -> None:
        ring = self.ring("a", "bb", "ccc")
        assert tail(ring, TailParams(None, 2, 1000)) == {
            "file": "(memory)",
            "logId": ring.log_id,
            "cursor": 9,
            "size": 9,
            "truncated": True,
            "reset": False,
            "lines": ["bb", "ccc"],
        }
        assert tail(ring, TailParams(None, 10, 5))["lines"] == ["ccc"]

    def test_a_cursor_returns_newer_lines_only(self) -> None:
        ring = self.ring("a", "bb")
        cursor = tail(ring, TailParams(None, 10, 1000))["cursor"]
        ring.append("new")
        answer = tail(ring, TailParams(cursor, 10, 1000))
        assert (answer["lines"], answer["reset"], answer["truncated"]) == (["new"], False, False)

    def test_a_cursor_from_elsewhere_resets(self) -> None:
        ring = self.ring("a")
        assert tail(ring, TailParams(50, 10, 1000))["reset"] is True

    def test_the_ring_keeps_a_bounded_number_of_bytes_and_always_the_newest_line(self) -> None:
        """A line can carry what a client sent, as long as a 25 MB frame: 5,000 of them are
        not kept, only RING_BYTES besides the newest; a cursor from before them resets."""
        huge = "x" * (1024 * 1024)
        ring = self.ring(*(f"{huge}{i}" for i in range(RING_BYTES // len(huge) + 3)))
        kept = sum(len(line) + 1 for _, line in ring.lines)
        assert RING_BYTES - len(huge) < kept <= RING_BYTES
        assert ring.lines[-1][1] == f"{huge}{RING_BYTES // len(huge) + 2}"
        ring.append("y" * (RING_BYTES + 1))
        assert [len(line) for _, line in ring.lines] == [RING_BYTES + 1]
        assert tail(ring, TailParams(0, 10, 1000))["reset"] is True

    def test_a_cursor_of_another_log_that_ends_one_of_this_ones_lines_resets(self) -> None:
        """A restarted process whose log reached a line end at the old cursor's offset
        answered only the lines after it, with no `reset`: the reader missed the restart and
        the new log's first lines. The answer names its log (`logId`); a cursor sent with
        another log's id resets."""
        before = self.ring("alpha", "beta")
        answer = tail(before, TailParams(None, 10, 1000))
        after = self.ring("alpha", "beta", "gamma")  # the same offsets, another process
        assert answer["logId"] == before.log_id != after.log_id
        again = tail(after, TailParams(answer["cursor"], 10, 1000, answer["logId"]))
        assert (again["reset"], again["lines"]) == (True, ["alpha", "beta", "gamma"])
        assert again["logId"] == after.log_id
        after.append("delta")
        same = tail(after, TailParams(again["cursor"], 10, 1000, again["logId"]))
        assert (same["reset"], same["lines"]) == (False, ["delta"])

    def test_a_cursor_of_another_process_within_this_ones_size_resets(self) -> None:
        """Every cursor we hand out ends a line. Another worker's (or a previous process's)
        cursor that falls inside this log cuts a line: the caller's place is lost, so it
        hears so and gets the newest lines."""
        other = self.ring("alpha", "beta")
        cursor = tail(other, TailParams(None, 10, 1000))["cursor"]
        ring = self.ring("xxx", "y" * 20, "zz")
        answer = tail(ring, TailParams(cursor, 10, 1000))
        assert (answer["reset"], answer["lines"]) == (True, ["xxx", "y" * 20, "zz"])
        assert tail(ring, TailParams(answer["cursor"], 10, 1000))["reset"] is False

    def test_a_cursor_of_another_log_sent_without_its_id_resets_too(self) -> None:
        """OpenClaw's `openclaw logs --follow` sends no `logId`: a restart whose new log had
        a line end at its cursor's offset was missed, as above. A cursor this log never
        handed out is another log's, whoever sends it."""
        before = self.ring("alpha", "beta")
        cursor = tail(before, TailParams(None, 10, 1000))["cursor"]
        after = self.ring("alpha", "beta", "gamma")
        again = tail(after, TailParams(cursor, 10, 1000))
        assert (again["reset"], again["lines"]) == (True, ["alpha", "beta", "gamma"])
        after.append("delta")
        same = tail(after, TailParams(again["cursor"], 10, 1000))
        assert (same["reset"], same["lines"]) == (False, ["delta"])

    def test_the_start_of_the_log_is_a_place_in_it(self) -> None:
        """Cursor 0, nothing dropped yet: every line, without `reset` (the start of any log)."""
        ring = self.ring("alpha", "beta")
        answer = tail(ring, TailParams(0, 10, 1000))
        assert (answer["reset"], answer["lines"]) == (False, ["alpha", "beta"])

    def test_the_cursors_handed_out_are_bounded_by_the_ring(self) -> None:
        """Each answer's cursor is remembered while it is a place in the ring: as many as its
        lines at most, however many answers were asked for."""
        ring = self.ring()
        for i in range(RING_LINES + 50):
            ring.append(f"line {i}")
            tail(ring, TailParams(None, 1, 1000))
        assert len(ring.handed_out) <= RING_LINES + 1
        oldest = ring.start
        assert tail(ring, TailParams(oldest, 1, 1000))["reset"] is False
