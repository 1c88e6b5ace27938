"""The incremental SSE parser (agents/providers/sse.py): pure, no server."""

from __future__ import annotations

import json
import time

import pytest

from agents.providers.sse import MAX_EVENT_BYTES, SSEError, SSEEvent, SSEParser, data_json


def parse(*chunks: bytes, eof: bool = True) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    if eof:
        events += parser.feed_eof()
    return events


def every_split(body: bytes) -> list[list[SSEEvent]]:
    """The events for the body cut at every byte offset into two chunks."""
    return [parse(body[:cut], body[cut:]) for cut in range(len(body) + 1)]


class TestFields:
    def test_data_line_is_a_message_event(self) -> None:
        assert parse(b'data: {"a":1}\n\n') == [SSEEvent("message", '{"a":1}')]

    def test_event_field_names_the_event(self) -> None:
        assert parse(b"event: ping\ndata: {}\n\n") == [SSEEvent("ping", "{}")]

    def test_event_name_does_not_leak_into_the_next_event(self) -> None:
        body = b"event: a\ndata: 1\n\ndata: 2\n\n"
        assert parse(body) == [SSEEvent("a", "1"), SSEEvent("message", "2")]

    def test_multi_line_data_is_joined_with_newlines(self) -> None:
        assert parse(b"data: one\ndata: two\ndata:\n\n") == [SSEEvent("message", "one\ntwo\n")]

    def test_only_one_space_after_the_colon_is_stripped(self) -> None:
        assert parse(b"data:x\n\ndata:  y\n\n") == [
            SSEEvent("message", "x"),
            SSEEvent("message", " y"),
        ]

    def test_empty_data_field_still_dispatches(self) -> None:
        assert parse(b"data\n\n") == [SSEEvent("message", "")]

    def test_comments_are_ignored(self) -> None:
        assert parse(b": keepalive\n\n:\ndata: x\n: mid\n\n") == [SSEEvent("message", "x")]

    def test_id_retry_and_unknown_fields_are_ignored(self) -> None:
        assert parse(b"id: 7\nretry: 10\nfoo: bar\ndata: x\n\n") == [SSEEvent("message", "x")]

    def test_blank_lines_without_data_dispatch_nothing(self) -> None:
        assert parse(b"\n\nevent: lonely\n\n\n") == []

    def test_data_keeps_colons(self) -> None:
        assert parse(b'data: {"u":"http://x"}\n\n') == [SSEEvent("message", '{"u":"http://x"}')]

    def test_leading_bom_is_dropped(self) -> None:
        assert parse(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("message", "x")]

    @pytest.mark.parametrize("pieces", [(b"\xef", b"\xbb\xbfdata: x\n\n"),
                                        (b"\xef\xbb", b"\xbfdata: x\n\n"),
                                        (b"\xef", b"\xbb", b"\xbf", b"data: x\n\n")])  # fmt: skip
    def test_a_bom_split_across_chunks_is_dropped(self, pieces: tuple[bytes, ...]) -> None:
        parser = SSEParser()
        events = [event for piece in pieces for event in parser.feed(piece)]
        assert events == [SSEEvent("message", "x")]

    def test_bytes_that_only_begin_like_a_bom_are_kept(self) -> None:
        parser = SSEParser()
        assert parser.feed(b"\xef") == []
        assert parser.feed(b"\n\ndata: x\n\n") == [SSEEvent("message", "x")]
        parser = SSEParser()
        assert parser.feed(b"\xef\xbb") + parser.feed(b"x: y\ndata: \xef\n\n") == [
            SSEEvent("message", "\ufffd")
        ]

    def test_invalid_utf8_is_replaced_not_raised(self) -> None:
        assert parse(b"data: \xff\n\n") == [SSEEvent("message", "\ufffd")]


class TestLineEndings:
    @pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
    def test_lf_crlf_and_cr_end_lines(self, nl: bytes) -> None:
        body = b"event: e" + nl + b"data: a" + nl + b"data: b" + nl + nl + b"data: c" + nl + nl
        assert parse(body) == [SSEEvent("e", "a\nb"), SSEEvent("message", "c")]

    @pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
    def test_any_chunk_boundary_gives_the_same_events(self, nl: bytes) -> None:
        body = b"event: e" + nl + b"data: h\xc3\xa9" + nl + nl + b": c" + nl + b"data: 2" + nl + nl
        expected = [SSEEvent("e", "hé"), SSEEvent("message", "2")]
        assert all(events == expected for events in every_split(body))

    def test_crlf_split_between_cr_and_lf_is_one_line_end(self) -> None:
        parser = SSEParser()
        assert parser.feed(b"data: a\r\n\r") == [SSEEvent("message", "a")]
        assert parser.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("message", "b")]

    def test_event_is_dispatched_as_soon_as_its_blank_line_arrives(self) -> None:
        parser = SSEParser()
        assert parser.feed(b"data: a\n") == []
        assert parser.feed(b"\n") == [SSEEvent("message", "a")]


class TestEndOfStream:
    def test_unterminated_event_is_dispatched_at_eof(self) -> None:
        assert parse(b"data: [DONE]") == [SSEEvent("message", "[DONE]")]

    def test_event_without_blank_line_is_dispatched_at_eof(self) -> None:
        assert parse(b"data: x\n") == [SSEEvent("message", "x")]

    def test_nothing_pending_gives_nothing_at_eof(self) -> None:
        assert parse(b"data: x\n\n: tail comment") == [SSEEvent("message", "x")]

    def test_incomplete_line_waits_for_more_bytes(self) -> None:
        assert parse(b"data: par", eof=False) == []


class TestLimits:
    def test_endless_line_is_an_error(self) -> None:
        parser = SSEParser()
        with pytest.raises(SSEError):
            parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))

    def test_endless_multi_line_event_is_an_error(self) -> None:
        parser = SSEParser()
        line = b"data: " + b"x" * (1024 * 1024) + b"\n"
        with pytest.raises(SSEError):
            for _ in range(MAX_EVENT_BYTES // (1024 * 1024) + 1):
                parser.feed(line)

    def test_endless_line_in_small_pieces_is_refused_in_time_linear_in_its_size(self) -> None:
        # A chunked body delivers a line in as many pieces as the upstream made chunks: each
        # piece must not copy (nor scan) the part of the line that came before it again.
        parser = SSEParser()
        piece = b"x" * 256
        parser.feed(b"data: ")
        started = time.process_time()
        with pytest.raises(SSEError, match="line too long"):
            for _ in range(MAX_EVENT_BYTES // len(piece) + 1):
                parser.feed(piece)
                assert time.process_time() - started < 2.0  # about 0.05 s; quadratic: minutes

    def test_a_line_in_many_pieces_is_one_line(self) -> None:
        pieces = [b"da", b"ta", b": ", *(b"x" for _ in range(1000)), b"\r", b"\n\r\n"]
        assert parse(*pieces) == [SSEEvent("message", "x" * 1000)]

    def test_sse_error_is_a_value_error(self) -> None:
        # The providers map ValueError (bad JSON, bad stream) to MalformedStream in one place.
        assert issubclass(SSEError, ValueError)


class TestDataJson:
    """`data_json` is `json.loads` with a shortcut: the same values, the same errors."""

    @pytest.mark.parametrize(
        "data",
        [
            '{"choices":[{"delta":{"content":" token"},"finish_reason":null}]}',
            '{"a": 1.5e3, "b": [true, false, null], "c": "\\u00e9\\ud83d\\ude00"}',
            '"\\ud800"',  # a lone surrogate, as json.loads lets it through
            "[]",
            "123",
            ' {"lead": "whitespace"}',
            '{"trail": "whitespace"}\n',
            "\t 0 \r\n",
        ],
    )
    def test_the_values_json_loads_returns(self, data: str) -> None:
        assert data_json(data) == json.loads(data)
        assert type(data_json(data)) is type(json.loads(data))

    @pytest.mark.parametrize(
        "data",
        ["", "   ", "[DONE]", '{"a":', '{"a": 1} {"b": 2}', '{"a": 1}x', "{'a': 1}", "nan1"],
    )
    def test_the_errors_json_loads_raises(self, data: str) -> None:
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(data)
        with pytest.raises(json.JSONDecodeError) as raised:
            data_json(data)
        assert (raised.value.msg, raised.value.pos) == (expected.value.msg, expected.value.pos)
