"""What tells an algorithm's cost without a clock: ids that count how often they are used."""

from __future__ import annotations

from typing import Any

import pytest

import agents.store
import agents.store_postgres
from agents.events import DeltaData, StreamedText
from agents.store import StoredResponse


class CountedId(str):
    """A call id that counts how often it is compared with another, hashed, and formatted
    into another text (`f"{id}_2"`)."""

    comparisons = 0
    hashes = 0
    formats = 0

    def __eq__(self, other: object) -> bool:
        CountedId.comparisons += 1
        return str.__eq__(self, other)

    def __hash__(self) -> int:
        CountedId.hashes += 1
        return str.__hash__(self)

    def __format__(self, spec: str) -> str:
        CountedId.formats += 1
        return str.__format__(self, spec)

    @classmethod
    def reset(cls) -> None:
        cls.comparisons = cls.hashes = cls.formats = 0

    @classmethod
    def uses(cls) -> int:
        return cls.comparisons + cls.hashes + cls.formats


class CountedText(str):
    """A text that counts the characters copied when it is joined to another with `+`."""

    copied = 0

    def __add__(self, other: str) -> str:
        CountedText.copied += len(self) + len(other)
        return str.__add__(self, other)

    def __radd__(self, other: str) -> str:  # taken before str's own `+` for a plain text
        CountedText.copied += len(other) + len(self)
        return str.__add__(other, self)


class CountedData(DeltaData):
    """An `assistant` event's data that counts the characters of its text read: a consumer
    that reads the text so far at every event reads O(n²) of a reply of n characters."""

    read = 0

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if key == "text":
            CountedData.read += len(value)
        return value

    @classmethod
    def stream(cls, pieces: list[str]) -> list[CountedData]:
        """The data of the events of a stream of `pieces`."""
        text = StreamedText()
        return [cls(text, text.add(piece).length, piece) for piece in pieces]


class BodiesRead:
    """Counts the characters of the stored response bodies the stores read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chars = 0
        built = agents.store.StoredResponse

        def counted(*fields: Any) -> StoredResponse:
            response = built(*fields)
            self.chars += len(response.body)
            return response

        monkeypatch.setattr(agents.store, "StoredResponse", counted)
        monkeypatch.setattr(agents.store_postgres, "StoredResponse", counted)
