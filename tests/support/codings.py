"""Compressed request bodies for the Content-Encoding tests (gateway/http/content_coding.py)."""

from __future__ import annotations

import zlib

from gateway.http.content_coding import INFLATE_STEP


def raw_deflate(data: bytes) -> bytes:
    """`data` as raw deflate (RFC 1951), what many clients send as `deflate`."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def holds_output_back(body: bytes) -> bool:
    """zlib's own view: `body` as raw deflate, its first byte given alone, then the rest with
    room for one step, fills the step and takes all the input, yet has not reached the end:
    the last bytes (a literal or a back-reference already decoded) wait inside zlib."""
    data = raw_deflate(body)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[:1], INFLATE_STEP)
    piece = inflater.decompress(data[1:], INFLATE_STEP)
    return len(piece) == INFLATE_STEP and not inflater.unconsumed_tail and not inflater.eof


def held_back_body(prefix: bytes = b"", suffix: bytes = b'"}]}') -> bytes:
    """`prefix`, a run of `a`, `suffix`: the first such body of about one step that zlib
    decodes with its end held back (holds_output_back)."""
    return next(
        body
        for size in range(INFLATE_STEP - 4096, INFLATE_STEP + 4096)
        if holds_output_back(body := prefix + b"a" * size + suffix)
    )
