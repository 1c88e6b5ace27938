"""Lone surrogates are repaired once, in agents/surrogates.py, for the store and the gateway."""

from __future__ import annotations

from agents.surrogates import has_surrogate, repair_surrogates


class TestRepairSurrogates:
    def test_text_without_surrogates_is_returned_as_it_is(self) -> None:
        text = "héllo 😀"
        assert repair_surrogates(text) is text

    def test_a_lone_half_becomes_a_replacement_character(self) -> None:
        assert repair_surrogates("a\ud800b\udfffc") == "a\ufffdb\ufffdc"

    def test_a_pair_split_across_two_strings_is_joined_when_they_meet(self) -> None:
        # A provider that split 😀 across two deltas: the transcript holds both halves.
        assert repair_surrogates("\ud83d" + "\ude00") == "😀"

    def test_a_reversed_pair_is_two_lone_halves(self) -> None:
        assert repair_surrogates("\ude00\ud83d") == "\ufffd\ufffd"

    def test_the_repaired_text_encodes_as_utf8(self) -> None:
        assert repair_surrogates("x\udcff").encode() == "x\ufffd".encode()


class TestHasSurrogate:
    def test_finds_a_lone_half(self) -> None:
        assert has_surrogate("ok\udcff")

    def test_astral_characters_are_not_surrogates_in_a_python_string(self) -> None:
        assert not has_surrogate("😀")

    def test_ascii_and_other_text_without_halves_has_none(self) -> None:
        assert not has_surrogate("plain ascii " * 100)
        assert not has_surrogate("héllo wörld, ☃")

    def test_a_half_after_long_ascii_is_found(self) -> None:
        assert has_surrogate("x" * 10_000 + "\ud800")
