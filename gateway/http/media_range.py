"""Whether an `Accept` header accepts a media type, read as OpenClaw's gateway reads it (its
src/gateway/http-media-range.ts): the most specific range that matches decides, by its
quality; a range that does not parse is skipped, a header whose quotes do not close accepts
nothing. Sans-I/O: strings in, a bool out.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QVALUE: Final = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")
_OWS: Final = " \t"


@attrs.frozen
class MediaRange:
    type: str
    subtype: str
    parameters: dict[str, str]
    quality: float = 1.0


def split_header(value: str, delimiter: str) -> list[str] | None:
    """`value` split at `delimiter` outside quoted strings, or None if a quote stays open."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for index, character in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and character == "\\":
            escaped = True
        elif character == '"':
            quoted = not quoted
        elif not quoted and character == delimiter:
            parts.append(value[start:index])
            start = index + 1
    if quoted or escaped:
        return None
    parts.append(value[start:])
    return parts


def _parameter_value(value: str) -> str | None:
    if _TOKEN.fullmatch(value):
        return value
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return None
    parsed, escaped = [], False
    for character in value[1:-1]:
        if escaped:
            parsed.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"':
            return None
        else:
            parsed.append(character)
    return None if escaped else "".join(parsed)


def parse_media_range(value: str, *, allow_quality: bool) -> MediaRange | None:
    """`type/subtype;name=value…` (with `q` where `allow_quality`), or None if malformed."""
    segments = split_header(value, ";")
    if not segments:
        return None
    kind, _, rest = segments[0].strip(_OWS).lower().partition("/")
    if not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(rest):  # also `a/b/c`: `/` no token
        return None
    quality: float | None = None
    parameters: dict[str, str] = {}
    for raw in segments[1:]:
        parameter = raw.strip(_OWS)
        if not parameter:
            continue
        name, equals, raw_value = parameter.partition("=")
        name = name.lower()
        if not _TOKEN.fullmatch(name) or not equals or not raw_value:
            return None
        if name == "q":
            if not allow_quality or quality is not None or not _QVALUE.fullmatch(raw_value):
                return None
            quality = float(raw_value)
            continue
        parsed = _parameter_value(raw_value)
        if parsed is None or name in parameters:
            return None
        parameters[name] = parsed.lower() if name == "charset" else parsed
    return MediaRange(kind, rest, parameters, 1.0 if quality is None else quality)


def accepts(accept: str, representation: str, *, wildcards: bool = True) -> bool:
    """Whether `accept` accepts `representation` (e.g. `text/html; charset=utf-8`): the
    quality of the most specific matching range (a type over `type/*` over `*/*`, then more
    parameters) is above 0. Without `wildcards` only a range naming the type counts."""
    offered = parse_media_range(representation, allow_quality=False)
    ranges = split_header(accept, ",") if accept else None
    if offered is None or ranges is None:
        return False
    best: tuple[int, int] = (-1, -1)
    quality = 0.0
    for raw in ranges:
        found = parse_media_range(raw, allow_quality=True)
        if found is None or not _matches(found, offered, wildcards):
            continue
        specificity = (
            0 if found.type == "*" else 1 if found.subtype == "*" else 2,
            len(found.parameters),
        )
        if specificity > best:
            best, quality = specificity, found.quality
        elif specificity == best:
            quality = max(quality, found.quality)
    return quality > 0


def _matches(found: MediaRange, offered: MediaRange, wildcards: bool) -> bool:
    exact = (found.type, found.subtype) == (offered.type, offered.subtype)
    wildcard = (
        wildcards and found.subtype == "*" and (found.type == "*" or found.type == offered.type)
    )
    if not exact and not wildcard:
        return False
    return all(offered.parameters.get(name) == value for name, value in found.parameters.items())


def accepts_html_page(accept: str | None) -> bool:
    """OpenClaw's test for its Control UI's page routes: no (or a blank) Accept, one that
    takes `text/html` (`*/*` does), or one naming `application/xhtml+xml`."""
    accept = (accept or "").strip()
    if not accept:
        return True
    return accepts(accept, "text/html; charset=utf-8") or accepts(
        accept, "application/xhtml+xml", wildcards=False
    )
