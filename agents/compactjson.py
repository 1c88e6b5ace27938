"""Compact JSON text (no spaces, UTF-8 characters unescaped), from json's C encoder built once.

`json.JSONEncoder.encode` builds a new C encoder on every call for anything but a bare string;
that is most of the cost of encoding a small object (1.7 → 0.6 µs for a turn's content blocks
or usage). The store writes three such values a turn; the HTTP answers one or more a request.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

_reference = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _c_encoder() -> Callable[[Any, int], Any] | None:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without json's C accelerator
        return None
    # No circular-reference markers (None): the values here are built from parsed JSON and
    # our own records, never cyclic, and a markers dict kept across calls could be left
    # holding ids after an encoding that raised.
    encoder: Callable[[Any, int], Any] = make(
        None,
        _reference.default,
        json.encoder.encode_basestring,
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )
    return encoder


_encode_chunks = _c_encoder()


def dumps(value: Any) -> str:
    """What `json.dumps(value, separators=(",", ":"), ensure_ascii=False)` returns."""
    if _encode_chunks is None:
        return _reference.encode(value)
    return "".join(_encode_chunks(value, 0))
