"""Lone surrogates: UTF-16 halves that a JSON string can spell (`"\\ud800"`) and UTF-8 cannot
carry. They come from a JavaScript client that cut a string inside an emoji, a provider that
split a pair across two deltas, or a header's bytes that were not UTF-8 (aiohttp keeps those
as surrogate escapes). Left in, they fail SQLite, the log and any answer that echoes them."""

from __future__ import annotations

import re

SURROGATE_RE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    # isascii() reads a flag of the string (constant time) where the search scans it: every
    # stored message passes here, and most text is ASCII.
    return not text.isascii() and SURROGATE_RE.search(text) is not None


def repair_surrogates(text: str) -> str:
    """`text` with split pairs joined and each lone half replaced by U+FFFD, as Node does when
    it writes such a string."""
    if not has_surrogate(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
