"""A text kept in pieces as it comes (a reply, a tool call's arguments, a thinking block), read
whole later. Below the providers and the events both, which keep such texts."""

from __future__ import annotations

# Pieces of a `TextPieces` joined at a time: their objects' overhead, 50 bytes a piece,
# becomes under a byte a character for pieces of a character or two.
TAIL_PIECES = 64


class TextPieces:
    """A text that comes in pieces, to be read whole later: a reply, a tool call's arguments,
    the deltas merged for a reader that fell behind. Added each to the text so far, a piece
    copied all of it (O(n²) for n pieces); kept one by one, each is a string object of its own,
    some 50 bytes beside its characters (30 times the text for 2-character pieces). So the
    pieces are joined by `TAIL_PIECES` as they come, and all of them when read: each
    character is copied once more, not once per piece."""

    __slots__ = ("_chunks", "_tail")

    def __init__(self) -> None:
        self._chunks: list[str] = []  # the text so far, but for the tail, in order
        self._tail: list[str] = []  # the latest pieces, fewer than TAIL_PIECES

    def append(self, piece: str) -> None:
        tail = self._tail
        tail.append(piece)
        if len(tail) >= TAIL_PIECES:
            self._chunks.append("".join(tail))
            tail.clear()

    def __bool__(self) -> bool:
        return bool(self._chunks or self._tail)

    def joined(self) -> str:
        """The text so far (kept joined: the next read starts from it)."""
        chunks, tail = self._chunks, self._tail
        if tail:
            chunks.extend(tail)
            tail.clear()
        if len(chunks) > 1:
            chunks[:] = ["".join(chunks)]
        return chunks[0] if chunks else ""
