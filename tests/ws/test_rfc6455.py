"""Text frame headers as RFC 6455 §5.2 spells them, read back by a parser written from the RFC."""

from __future__ import annotations

import struct

import pytest

from gateway.ws.rfc6455 import MaskCheck, text_frame_header


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


def client_frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    """A frame as a client sends it: masked (with a fixed key) unless told otherwise."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | length)
    elif length < 0x10000:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = b"\x01\x02\x03\x04"
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class TestMaskCheck:
    FRAMES = (
        client_frame(b"a" * 10),
        client_frame(b"", opcode=0x9),  # a ping
        client_frame(b"b" * 300),
        client_frame(b"c" * 70_000),
        client_frame(b"\x80" * 126),  # payload bytes that look like an unmasked header
    )

    @pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 1000, 10**6])
    def test_masked_frames_pass_in_chunks_of_any_size(self, chunk: int) -> None:
        stream = b"".join(self.FRAMES)
        check = MaskCheck()
        for at in range(0, len(stream), chunk):
            assert check.feed(stream[at : at + chunk]) is None

    @pytest.mark.parametrize("chunk", [1, 2, 5, 1000, 10**6])
    def test_an_unmasked_frame_is_found_where_it_begins(self, chunk: int) -> None:
        before = b"".join(self.FRAMES)
        stream = before + client_frame(b"{}", masked=False) + client_frame(b"x")
        check = MaskCheck()
        found = None
        for at in range(0, len(stream), chunk):
            found = check.feed(stream[at : at + chunk])
            if found is not None:
                assert at + found == len(before) or (found == 0 and at > len(before) - 2)
                break
        assert found is not None

    def test_an_unmasked_first_frame(self) -> None:
        assert MaskCheck().feed(client_frame(b"hi", masked=False)) == 0

    @pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000, 10**6])
    def test_it_stops_where_the_first_message_ends(self, chunk: int) -> None:
        # A ping, then a text message in two fragments (FIN on the second), then more.
        first = (
            client_frame(b"", opcode=0x9)
            + bytes((0x01,)) + client_frame(b"a" * 200)[1:]  # text, FIN clear
            + client_frame(b"b" * 70_000, opcode=0x0)  # the continuation, FIN set
        )  # fmt: skip
        stream = first + client_frame(b"next") + client_frame(b"", masked=False)
        check = MaskCheck(stop_after_message=True)
        at = 0
        while check.stopped_at is None:
            assert check.feed(stream[at : at + chunk]) is None
            if check.stopped_at is None:
                at += chunk
        assert at + check.stopped_at == len(first)
        # The bytes after it, fed again, are checked as ever.
        assert check.feed(stream[len(first) :]) == len(client_frame(b"next"))

    @pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000, 10**6])
    def test_it_counts_the_payload_of_the_message_not_yet_whole(self, chunk: int) -> None:
        # A text message in two fragments with a ping between them, then a whole one.
        frames = [  # each with its header's length (with the mask key), data, FIN
            (bytes((0x01,)) + client_frame(b"a" * 200)[1:], 8, True, False),
            (client_frame(b"p" * 5, opcode=0x9), 6, False, True),  # a ping: not counted
            (client_frame(b"b" * 70_000, opcode=0x0), 14, True, True),
            (client_frame(b"c" * 300), 8, True, True),
        ]
        stream = b"".join(frame for frame, *_ in frames)

        def after(fed: int) -> tuple[int, bool, int]:
            """(partial, pending, ended) once `fed` bytes of the stream came."""
            partial, fragmented, ended, start = 0, False, 0, 0
            for frame, head, data, fin in frames:
                got = min(fed - start, len(frame))
                if got < len(frame):
                    if data and got >= head:
                        return partial + got - head, True, ended
                    return partial, fragmented, ended
                if data and fin:
                    partial, fragmented, ended = 0, False, ended + 1
                elif data:
                    partial, fragmented = partial + len(frame) - head, True
                start += len(frame)
            return partial, fragmented, ended

        check = MaskCheck()
        for at in range(0, len(stream), chunk):
            assert check.feed(stream[at : at + chunk]) is None
            fed = min(at + chunk, len(stream))
            assert (check.partial, check.pending, check.ended) == after(fed), fed
        assert (check.partial, check.pending, check.ended) == (0, False, 2)
