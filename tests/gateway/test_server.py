"""gateway/server.py: what the process does once it listens."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.server import GC_YOUNG_THRESHOLD, settle_collector


class TestSettleCollector:
    @pytest.fixture(autouse=True)
    def collector_restored(self) -> Iterator[None]:
        thresholds = gc.get_threshold()
        try:
            yield
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    def test_start_up_objects_are_frozen(self) -> None:
        kept: object = type("StartUp", (), {})()  # a tracked object, made before
        settle_collector()
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # frozen ones are not listed

    def test_young_generation_waits_for_the_threshold(self) -> None:
        older = gc.get_threshold()[1:]
        settle_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
