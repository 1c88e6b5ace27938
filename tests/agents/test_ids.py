"""Time-ordered ids (agents/ids.py)."""

from __future__ import annotations

import time
import uuid

from agents.ids import uuid7, uuid7_hex


def test_a_uuid7_is_an_rfc_9562_version_7_uuid() -> None:
    value = uuid7()
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_a_uuid7_starts_with_the_unix_milliseconds_it_was_made_at() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(uuid7()).int >> 80
    after = time.time_ns() // 1_000_000
    assert before <= value <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    first = uuid7()
    time.sleep(0.002)
    assert uuid7() > first
    assert uuid7_hex() > first.replace("-", "")


def test_ids_differ_in_their_random_bits() -> None:
    values = {uuid7() for _ in range(10_000)}
    assert len(values) == 10_000
    randoms = {uuid.UUID(v).int & ((1 << 80) - 1) for v in values}
    assert len(randoms) == 10_000


def test_the_hex_form_is_the_same_uuid_without_dashes() -> None:
    value = uuid7_hex()
    assert len(value) == 32
    assert uuid.UUID(hex=value).version == 7
