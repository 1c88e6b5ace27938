"""Reading an `Accept` header as OpenClaw's gateway reads it (gateway/http/media_range.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.media_range import accepts, accepts_html_page, parse_media_range, split_header
from tests.support.strategies import fuzz

HTML = "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "taken"),
    [
        ("text/html", True),
        ("*/*", True),
        ("text/*;q=0.1", True),
        ("TEXT/HTML;Charset=UTF-8", True),
        ("text/html;charset=latin1", False),  # a parameter the page does not have
        ("text/html;level=1", False),
        ("text/html;q=0", False),
        ("*/*;q=0.8, text/html;q=0", False),  # the type named beats the wildcard
        ("text/html;q=0, text/html;q=0.5", True),  # equally specific: the best quality
        ("text/plain, application/json", False),
        ("text/html;q=1.5", False),  # not a quality: the range is skipped
        ("text/html;q=0.5;q=0.5", False),
        ('text/plain;x="a,text/html", text/html', True),  # a quoted comma splits nothing
        ('text/plain;x="a,text/html"', False),
        ('text/html;x="open', False),  # a quote that never closes: nothing accepted
        ("text/html/x, text", False),
        (",,", False),
    ],
)
def test_the_most_specific_matching_range_decides(accept: str, taken: bool) -> None:
    assert accepts(accept, HTML) is taken


def test_without_wildcards_only_the_type_named_counts() -> None:
    assert not accepts("*/*", "application/xhtml+xml", wildcards=False)
    assert accepts("application/xhtml+xml;q=0.2", "application/xhtml+xml", wildcards=False)


@pytest.mark.parametrize(
    ("accept", "page"),
    [(None, True), ("", True), (" ", True), ("*/*", True), ("application/xhtml+xml", True)],
)
def test_a_page_route_takes_no_accept_or_one_taking_html(accept: str | None, page: bool) -> None:
    assert accepts_html_page(accept) is page


def test_a_quoted_delimiter_does_not_split() -> None:
    assert split_header('a;x="1,2",b', ",") == ['a;x="1,2"', "b"]
    assert split_header('a;x="1\\"', ",") is None
    found = parse_media_range('text/html;X="a\\"b";q=0.5', allow_quality=True)
    assert found is not None and (found.parameters, found.quality) == ({"x": 'a"b'}, 0.5)


@fuzz(500)
@given(
    accept=st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                [
                    "text/html",
                    "*/*",
                    "text/*",
                    ";q=0",
                    ";q=0.5",
                    ";q=1.0001",
                    ";charset=UTF-8",
                    '"',
                    "\\",
                    ",",
                    ";",
                    "=",
                    " ",
                    "application/xhtml+xml",
                    "a/b/c",
                ]
            ),
            max_size=12,
        ).map("".join),
    )
)
def test_any_accept_is_read_without_an_error(accept: str) -> None:
    assert isinstance(accepts_html_page(accept), bool)
