"""The compact encoder says exactly what json.dumps with the same options says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents import compactjson


def reference(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


VALUES: list[Any] = [
    "plain",
    'quote " backslash \\ newline \n tab \t nul \x00',
    "ünïcödé 日本語 🎉",
    "lone \ud800 half",
    0,
    -(2**70),
    1.5,
    float("nan"),
    float("inf"),
    -float("inf"),
    True,
    None,
    [],
    {},
    [{"type": "text", "text": "hi"}],
    {"input": 3, "output": 1, "totalTokens": 4},
    {"nested": {"deep": [1, [2, [3, {"x": None}]]]}, "tuple": (1, "a")},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
]


class TestDumps:
    @pytest.mark.parametrize("value", VALUES, ids=repr)
    def test_it_matches_json_dumps(self, value: Any) -> None:
        assert compactjson.dumps(value) == reference(value)

    def test_it_keeps_the_order_of_keys(self) -> None:
        assert compactjson.dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'

    def test_an_unserializable_value_raises_what_json_dumps_raises(self) -> None:
        with pytest.raises(TypeError) as ours:
            compactjson.dumps({"a": {1, 2}})
        with pytest.raises(TypeError) as theirs:
            reference({"a": {1, 2}})
        assert str(ours.value) == str(theirs.value)

    def test_a_key_of_another_type_raises_what_json_dumps_raises(self) -> None:
        with pytest.raises(TypeError) as ours:
            compactjson.dumps({(1, 2): "tuple key"})
        with pytest.raises(TypeError) as theirs:
            reference({(1, 2): "tuple key"})
        assert str(ours.value) == str(theirs.value)

    def test_the_encoder_is_usable_again_after_a_failure(self) -> None:
        with pytest.raises(TypeError):
            compactjson.dumps([object()])
        assert compactjson.dumps([[1], [1]]) == "[[1],[1]]"

    def test_without_the_c_encoder_it_falls_back_to_the_python_one(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(compactjson, "_encode_chunks", None)
        for value in VALUES:
            assert compactjson.dumps(value) == reference(value)
