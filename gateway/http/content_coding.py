"""A request body's codings, Sans-I/O: which transfer codings the gateway reads (chunked alone),
which `Content-Encoding`s the endpoints accept, and an inflater that works in bounded steps, so
the body limit counts decoded bytes and a small compressed body (a "zip bomb") never makes the
gateway hold more than the limit.

aiohttp is told not to decode request bodies (gateway/server.py `make_runner`): its decoder
answers some failures (a cut deflate stream, br or zstd without their optional packages) with
its own plain-text 400 before any handler runs, and lets others escape the body read as a 500.
Decoding here makes every failure a §8 error body, and what is accepted does not depend on
which optional packages happen to be installed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from gateway.http.openai_wire import RequestError, bad_request, payload_too_large

CHUNKED = "chunked"
UNSUPPORTED_TRANSFER_CODING_MESSAGE = (
    "Unsupported `Transfer-Encoding`: send the body with a Content-Length or chunked alone."
)
IDENTITY = "identity"
# RFC 9110 §8.4.1: "x-gzip" is "gzip". No br/zstd: the standard library cannot decode them.
GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
DEFLATE = "deflate"
# What one decompress call may produce: aiohttp's own read size, so a decoded body arrives
# in pieces like a plain one.
INFLATE_STEP = 64 * 1024
UNSUPPORTED_CODING_MESSAGE = (
    "Unsupported `Content-Encoding`: send the body as identity, gzip or deflate."
)
# RFC 9110 §12.5.3: in a response, which content codings a request may have.
ACCEPTED_CODINGS = "gzip, deflate"


def check_transfer_coding(values: Iterable[str]) -> None:
    """A body framed by anything but `chunked` alone is refused. RFC 9112 §6.1 suggests a 501
    (a transfer coding the server does not understand), but it is the client's input, and
    no client input gets a 5xx here: a 400 that says what to send instead. The HTTP parser
    reads `gzip, chunked` as chunked and hands on the still compressed bytes, which would be
    answered as invalid JSON; and a request framed in a way one hop reads otherwise than the
    next is how requests are smuggled, so the connection closes (a transfer coding other than
    a final chunked, the parser refuses itself with a 400)."""
    codings = [
        coding
        for value in values
        for coding in (part.strip(" \t").lower() for part in value.split(","))
        if coding  # RFC 9110 §5.6.1: empty list elements are no codings
    ]
    if codings and codings != [CHUNKED]:
        raise RequestError(
            400,
            UNSUPPORTED_TRANSFER_CODING_MESSAGE,
            code="unsupported_transfer_encoding",
            closes=True,
        )


def request_coding(values: Iterable[str]) -> str | None:
    """The one content coding of a body, from every `Content-Encoding` header it came with;
    None for none or identity. Stacked codings (`gzip, gzip`) are refused: one layer is what
    any client sends, and each further layer multiplies what a few bytes expand to. Either is
    a 415 (RFC 9110 §15.5.16) that names the codings taken."""
    codings = [
        coding
        for value in values
        for coding in (part.strip().lower() for part in value.split(","))
        if coding and coding != IDENTITY
    ]
    if not codings:
        return None
    if len(codings) > 1 or not (codings[0] in GZIP_CODINGS or codings[0] == DEFLATE):
        raise RequestError(
            415,
            UNSUPPORTED_CODING_MESSAGE,
            code="unsupported_content_encoding",
            headers={"Accept-Encoding": ACCEPTED_CODINGS},
        )
    return "gzip" if codings[0] in GZIP_CODINGS else DEFLATE


class BodyInflater:
    """Decodes one body of `coding` as it arrives; never produces more than `limit` bytes in
    all (one more means 413), whatever the compressed input expands to."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self._limit = limit
        self._decoded = 0
        self._inflater: zlib._Decompress | None = None
        self._started = False

    def feed(self, data: bytes) -> list[bytes]:
        """The decoded pieces of `data`, each at most INFLATE_STEP bytes: a few compressed
        bytes never make one large allocation, and no piece is copied into a bigger one."""
        out: list[bytes] = []
        more = bool(data)
        try:
            while more:
                inflater = self._member(data)
                piece = inflater.decompress(data, INFLATE_STEP)
                self._decoded += len(piece)
                if self._decoded > self._limit:
                    raise payload_too_large()
                out.append(piece)
                # What the step left, else (after a gzip member's end) the next member.
                data = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")
                # A full step may end with all the input taken and output still inside zlib
                # (a literal or the rest of a back-reference it decoded): asked again with
                # no input, it gives that.
                more = bool(data) or (len(piece) == INFLATE_STEP and not inflater.eof)
        except zlib.error:
            raise self._invalid() from None
        return out

    def finish(self) -> None:
        """At the body's end: a stream cut short is as invalid as a corrupt one. An empty
        body stays empty (what the endpoint then makes of it)."""
        if self._started and (self._inflater is None or not self._inflater.eof):
            raise self._invalid()

    def _member(self, data: bytes) -> zlib._Decompress:
        inflater = self._inflater
        if inflater is not None and not inflater.eof:
            return inflater
        if inflater is not None and self.coding == DEFLATE:
            raise self._invalid()  # bytes after the end of a deflate stream
        if self.coding == DEFLATE and data[0] & 0x0F != 8:
            # RFC 9110's deflate is zlib-wrapped (RFC 1950, whose first byte says method
            # 8); many clients send raw deflate (RFC 1951) under the same name.
            wbits = -zlib.MAX_WBITS
        elif self.coding == DEFLATE:
            wbits = zlib.MAX_WBITS
        else:
            wbits = 16 + zlib.MAX_WBITS  # the gzip header and trailer
        self._inflater = zlib.decompressobj(wbits)
        self._started = True
        return self._inflater

    def _invalid(self) -> Exception:
        return bad_request(f"Request body is not valid {self.coding} data.")
