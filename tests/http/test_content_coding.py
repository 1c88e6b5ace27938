"""gateway.http.content_coding, the pure part: which `Content-Encoding` a body has, and inflating
it within the body limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.http.content_coding import (
    INFLATE_STEP,
    BodyInflater,
    check_transfer_coding,
    request_coding,
)
from gateway.http.openai_wire import RequestError
from tests.support.codings import held_back_body, raw_deflate

BODY = b'{"messages":[{"role":"user","content":"hello"}]}'


def inflate(coding: str, data: bytes, limit: int = 1000, piece: int = 0) -> bytes:
    inflater = BodyInflater(coding, limit)
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)] if piece else [data]
    out = b"".join(b"".join(inflater.feed(p)) for p in pieces)
    inflater.finish()
    return out


class TestRequestCoding:
    @pytest.mark.parametrize(
        ("values", "coding"),
        [
            ([], None),
            ([""], None),
            (["identity"], None),
            (["gzip"], "gzip"),
            ([" GZip "], "gzip"),
            (["x-gzip"], "gzip"),
            (["deflate"], "deflate"),
            (["identity, gzip"], "gzip"),
            (["identity", "deflate"], "deflate"),
        ],
    )
    def test_one_supported_coding_or_none(self, values: list[str], coding: str | None) -> None:
        assert request_coding(values) == coding

    @pytest.mark.parametrize(
        "values", [["br"], ["zstd"], ["compress"], ["gzip, gzip"], ["gzip", "deflate"], ["*"]]
    )
    def test_anything_else_is_a_415(self, values: list[str]) -> None:
        with pytest.raises(RequestError) as caught:
            request_coding(values)
        assert caught.value.status == 415
        assert caught.value.headers == {"Accept-Encoding": "gzip, deflate"}


class TestTransferCoding:
    @pytest.mark.parametrize("values", [[], ["chunked"], ["Chunked"], [" , chunked,"]])
    def test_none_or_chunked_alone_is_read(self, values: list[str]) -> None:
        check_transfer_coding(values)

    @pytest.mark.parametrize(
        "values", [["gzip, chunked"], ["identity,chunked"], ["gzip", "chunked"], ["x, chunked"]]
    )
    def test_any_other_coding_is_a_400_that_closes(self, values: list[str]) -> None:
        with pytest.raises(RequestError) as caught:
            check_transfer_coding(values)
        assert (caught.value.status, caught.value.closes) == (400, True)


class TestBodyInflater:
    def test_a_body_decodes_whole_or_byte_by_byte(self) -> None:
        assert inflate("gzip", gzip.compress(BODY)) == BODY
        assert inflate("gzip", gzip.compress(BODY), piece=1) == BODY
        assert inflate("deflate", zlib.compress(BODY), piece=1) == BODY

    def test_exactly_the_limit_decodes_and_one_byte_more_is_a_413(self) -> None:
        assert inflate("gzip", gzip.compress(b"a" * 1000), limit=1000) == b"a" * 1000
        with pytest.raises(RequestError) as caught:
            inflate("gzip", gzip.compress(b"a" * 1001), limit=1000)
        assert caught.value.status == 413

    def test_no_piece_is_larger_than_one_step(self) -> None:
        inflater = BodyInflater("gzip", 10 * INFLATE_STEP)
        pieces = inflater.feed(gzip.compress(bytes(5 * INFLATE_STEP)))
        assert max(map(len, pieces)) == INFLATE_STEP
        assert sum(map(len, pieces)) == 5 * INFLATE_STEP

    def test_output_zlib_holds_after_a_full_step_is_not_lost(self) -> None:
        """All the input taken and the step full, zlib may still hold the last bytes (the
        rest of a back-reference, a decoded literal): they come out, the body is whole."""
        body = held_back_body()
        data = raw_deflate(body)
        inflater = BodyInflater("deflate", 2 * len(body))
        out = b"".join(inflater.feed(data[:1]) + inflater.feed(data[1:]))
        inflater.finish()
        assert out == body

    def test_an_empty_body_stays_empty(self) -> None:
        assert inflate("gzip", b"") == b""

    @pytest.mark.parametrize(
        ("coding", "data"),
        [
            ("gzip", gzip.compress(BODY)[:-1]),
            ("gzip", gzip.compress(BODY) + b"\x00"),
            ("gzip", b"\x1f\x8b garbage"),
            ("deflate", zlib.compress(BODY)[:-1]),
            ("deflate", zlib.compress(BODY) + b"more"),
        ],
        ids=["gzip-cut", "gzip-trailing", "gzip-garbage", "deflate-cut", "deflate-trailing"],
    )
    def test_a_stream_cut_short_corrupt_or_with_trailing_bytes_is_a_400(
        self, coding: str, data: bytes
    ) -> None:
        with pytest.raises(RequestError) as caught:
            inflate(coding, data)
        assert (caught.value.status, caught.value.message) == (
            400,
            f"Request body is not valid {coding} data.",
        )
