"""Hypothesis strategies for hostile input: JSON values with odd Unicode, huge strings, deep
nesting and literals Python's encoder will not write; and a serializer that writes them.

Values are Python data plus two markers, `Raw` (JSON text written as is: `NaN`, `1e400`,
an integer of 5,000 digits) and `Deep` (nesting deeper than `json.dumps` can recurse);
`to_json` turns them into text."""

from __future__ import annotations

import copy
import json
import math
import operator
import os
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st


def fuzz(examples: int) -> settings:
    """A fixed number of examples, derandomized and without the example database: every run
    of the suite sends the same requests, in bounded time. Shrinking a failure can take
    minutes (every step is a request, and a hang costs its timeout), so it only runs with
    CLAWGATE_FUZZ_SHRINK=1; without it the failing example is reported as generated."""
    phases = [Phase.explicit, Phase.generate]
    if os.environ.get("CLAWGATE_FUZZ_SHRINK") == "1":
        phases.append(Phase.shrink)
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@attrs.frozen
class Raw:
    text: str


@attrs.frozen
class Deep:
    depth: int
    open: str  # "[" or '{"a":'
    close: str
    inner: Any = None


def to_json(value: Any, ascii_only: bool = True) -> str:
    """Compact JSON; with `ascii_only` every non-ASCII character is escaped."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Deep):
        inner = to_json(value.inner, ascii_only)
        return value.open * value.depth + inner + value.close * value.depth
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}:{to_json(v, ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def wire_bytes(value: Any, ascii_only: bool = True, raw_surrogates: bool = False) -> bytes:
    """`value` as JSON in UTF-8: non-ASCII characters escaped or not; a lone surrogate as its
    `\\udXXX` escape, or with `raw_surrogates` as the three bytes UTF-8 has no place for."""
    errors = "surrogatepass" if raw_surrogates else "backslashreplace"
    return to_json(value, ascii_only).encode("utf-8", errors)


# Characters that break naive code: NUL and controls, bidi overrides (RTL), BOM, line
# separators, astral and ZWJ emoji, lone and reversed surrogates, noncharacters, combining
# marks, quotes and backslashes, and strings with a meaning somewhere (keys, SSE, templates).
ODD_CHARS = (
    "\x00",
    "\x1b[31m",
    "\x7f",
    "\u202e",
    "\u200f",
    "\u061c",
    "\u0627\u0644\u0633\u0644\u0627\u0645",
    "\ufeff",
    "\u2028",
    "\u0085",
    "😀",
    "👩\u200d👩\u200d👧",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\udcff",
    "\udc80\ud800",
    "\uffff",
    "\ufffe",
    "\U0010ffff",
    "e\u0301\u0301",
    "\\",
    '"',
    "\r\n",
    "\n\ndata: [DONE]\n\n",
    "${HOME}",
    "%s%n",
    "agent:main:",
    "subagent:",
    "main",
    " ",
)

chars = st.characters(exclude_categories=())  # surrogates included
odd_text = st.lists(
    st.one_of(st.sampled_from(ODD_CHARS), st.text(chars, max_size=6)), max_size=8
).map("".join)
nonempty_text = odd_text.map(lambda s: s or "\u202e")
# Long runs without spaces: the echo agent answers with one delta per word, so a long run
# of words measures its quadratic text building rather than the gateway's robustness.
huge_text = st.builds(
    operator.mul,
    st.sampled_from(["a", "é", "😀", "\u202e", "\x00", "\ud800", "\\", '"', "ab cd "]),
    st.sampled_from([2_000, 100_000]),
).map(lambda s: s[:20_000] if " " in s else s)
text = st.one_of(odd_text, odd_text, odd_text, huge_text)

SPECIAL_LITERALS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "-0",
    "1e-400",
    "0.0000000000000000000000000000001",
    "123456789012345678901234567890",
    "9007199254740993",
    "1" + "0" * 5000,  # beyond Python's int parsing limit
)
specials = st.one_of(
    st.sampled_from(SPECIAL_LITERALS).map(Raw),
    st.builds(
        Deep,
        st.sampled_from([2, 100, 900, 5_000, 100_000]),
        st.sampled_from(["[", '{"a":']),
        st.just(""),
    ).map(lambda d: attrs.evolve(d, close="]" if d.open == "[" else "}")),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), odd_text), children, max_size=4),
    ),
    max_leaves=10,
)
# Anything at all: a JSON value of any type, or a literal or nesting a parser chokes on.
wrong = st.one_of(json_values, specials)


# One value of every JSON type, and containers whose contents are wrong again (an object as a
# `type`, where code might look it up in a set): what the walking tests put at every place.
# And the numbers JSON can spell that a double cannot hold, or that are no number at all
# (`json.dumps` writes NaN and Infinity as Python's parser reads them).
WRONG_TYPES: tuple[Any, ...] = (
    None, False, 0, -1.5, "", [], [{}], {"type": {}},
    math.nan, math.inf, -math.inf, 10**400, 1e300,
)  # fmt: skip


# Values of the right type or not, made to break what a field's checks let through: over every
# length limit (strings, lists, objects), NUL and controls, lone and reversed surrogates (as
# `\\udXXX` escapes on the wire), bidi marks and astral characters, a key where a name goes.
ODD_VALUES: tuple[Any, ...] = (
    "x" * 100_000, "😀" * 5_000, "\x00", "\x1b[31m\x7f\x08", "\ud800", "\udc80\ud800",
    "\u202e\ufeff\u2028", " ", "agent:main:" + "k" * 2_000,
    ["x"] * 3_000, [{}] * 300, {f"k{i}": i for i in range(300)}, {"k" * 1_000: "v"},
)  # fmt: skip


def odd_steps(value: Any) -> list[tuple[tuple[str | int, ...], Any]]:
    """(place, odd value) pairs for a walk of `value`: every place with every other one of
    ODD_VALUES, the places taking turns, so each value reaches half the places at half the
    cost of all of them."""
    return [
        (path, ODD_VALUES[j])
        for i, path in enumerate(json_paths(value))
        for j in range(i % 2, len(ODD_VALUES), 2)
    ]


def json_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in `value`: the root, each container, each leaf, depth first."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(json_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(json_paths(item, (*path, index)))
    return paths


def replaced(value: Any, path: tuple[str | int, ...], new: Any) -> Any:
    """A copy of `value` with `new` at `path` (which exists)."""
    if not path:
        return copy.deepcopy(new)
    value = copy.deepcopy(value)
    node = value
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = copy.deepcopy(new)
    return value


def json_keys(value: Any) -> set[str]:
    """Every object key anywhere in `value`."""
    if isinstance(value, dict):
        return set(value).union(*(json_keys(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(json_keys(item) for item in value))
    return set()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each as often as its weight says (`one_of` does not weigh:
    repeating a branch there does not make it likelier)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def often(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times out of four (so later pipeline steps are reached), else anything."""
    return weighted((3, valid), (1, wrong))


def bytes_of(alphabet: list[int], max_size: int = 60) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map(bytes)


def _has_index(items: list[Any], step: str | int) -> bool:
    return isinstance(step, int) and -len(items) <= step < len(items)


def corrupted(value: dict[str, Any], wrongs: dict[tuple[str | int, ...], Any]) -> dict[str, Any]:
    """A copy of `value` with a wrong value at each path (creating the objects on the way;
    a path through something that is not a container is skipped)."""
    value = copy.deepcopy(value)
    for path, wrong_value in wrongs.items():
        node: Any = value
        for step in path[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(step, {})
            elif (
                isinstance(node, list) and isinstance(step, int) and -len(node) <= step < len(node)
            ):
                node = node[step]
            else:
                break
        else:
            last = path[-1]
            if (isinstance(node, dict) and isinstance(last, str)) or (
                isinstance(node, list) and _has_index(node, last)
            ):
                node[last] = wrong_value
    return value
