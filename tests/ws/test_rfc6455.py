"""Text frame headers as RFC 6455 §5.2 spells them, read back by a parser written from the RFC."""

from __future__ import annotations

import struct

import pytest

from gateway.ws.rfc6455 import text_frame_header


def read_header(data: bytes) -> tuple[bool, int, bool, int, int]:
    """FIN, opcode, MASK, payload length, header length."""
    first, second = data[0], data[1]
    length, size = second & 0x7F, 2
    if length == 126:
        (length,), size = struct.unpack("!H", data[2:4]), 4
    elif length == 127:
        (length,), size = struct.unpack("!Q", data[2:10]), 10
    return bool(first & 0x80), first & 0x0F, bool(second & 0x80), length, size


class TestTextFrameHeader:
    @pytest.mark.parametrize(
        ("length", "size"),
        [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (25 * 2**20, 10)],
    )
    def test_a_header_carries_fin_text_no_mask_and_the_length_in_its_shortest_form(
        self, length: int, size: int
    ) -> None:
        header = text_frame_header(length)
        assert len(header) == size
        assert read_header(header) == (True, 0x1, False, length, size)

    def test_no_reserved_bits_are_set(self) -> None:
        for length in (0, 200, 70_000):
            assert text_frame_header(length)[0] & 0x70 == 0
