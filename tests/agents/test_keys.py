"""Session keys: agents-sessions.md §4 and http-openai.md §4.2."""

from __future__ import annotations

import pytest

from agents.errors import InvalidSessionKey
from agents.keys import (
    SESSION_KEY_MAX,
    is_main_key,
    is_reserved,
    normalize_session_key,
    parse_session_key,
)

INVALID = "Invalid `x-openclaw-session-key`."
TOO_LONG = "Session key too long (max 512 characters)."
RESERVED = "`x-openclaw-session-key` cannot use reserved internal session namespaces."


def invalid_message(raw: str, agent_id: str = "main", main_key: str = "main", **kw: bool) -> str:
    with pytest.raises(InvalidSessionKey) as info:
        normalize_session_key(raw, agent_id, main_key, **kw)
    return info.value.message


class TestNormalize:
    def test_limit_is_512(self) -> None:
        assert SESSION_KEY_MAX == 512

    def test_plain_key_is_prefixed_with_the_agent(self) -> None:
        assert normalize_session_key("ws-1", "main") == "agent:main:ws-1"

    def test_key_is_trimmed_and_lowercased(self) -> None:
        assert normalize_session_key("  Foo Bar\t", "ops") == "agent:ops:foo bar"

    def test_agent_id_is_lowercased(self) -> None:
        assert normalize_session_key("x", "Ops") == "agent:ops:x"

    def test_main_is_the_main_session(self) -> None:
        assert normalize_session_key(" MAIN ", "ops") == "agent:ops:main"

    def test_configured_main_key_names_the_main_session(self) -> None:
        assert normalize_session_key("home", "ops", "home") == "agent:ops:home"
        assert normalize_session_key("main", "ops", "home") == "agent:ops:home"

    def test_agent_key_is_used_as_is_lowercased(self) -> None:
        assert normalize_session_key("Agent:Beta:S1", "main") == "agent:beta:s1"

    def test_agent_key_rest_may_contain_colons(self) -> None:
        assert normalize_session_key("agent:main:openai:abc", "x") == "agent:main:openai:abc"

    @pytest.mark.parametrize(
        "raw",
        [
            "agent:",
            "agent:main",
            "agent:main:",
            "agent::x",
            "agent:-bad:x",
            "agent:_bad:x",
            "agent:b@d:x",
            "agent:" + "a" * 65 + ":x",
            "",
            "   ",
        ],
    )
    def test_malformed_keys_are_invalid(self, raw: str) -> None:
        assert invalid_message(raw) == INVALID

    def test_agent_id_of_64_characters_is_valid(self) -> None:
        key = "agent:" + "a" * 64 + ":x"
        assert normalize_session_key(key, "main") == key

    def test_resolved_key_of_512_characters_is_accepted(self) -> None:
        raw = "k" * (512 - len("agent:main:"))
        assert len(normalize_session_key(raw, "main")) == 512

    def test_resolved_key_over_512_characters_is_too_long(self) -> None:
        # 502 characters given, 513 after the prefix: the limit applies to the resolved key.
        assert invalid_message("k" * (513 - len("agent:main:"))) == TOO_LONG
        assert invalid_message("agent:main:" + "k" * 502) == TOO_LONG

    @pytest.mark.parametrize(
        "raw", ["subagent:x", "cron:nightly", "ACP:1", "agent:main:cron:x", "agent:ops:acp:y"]
    )
    def test_reserved_namespaces_are_refused_when_asked(self, raw: str) -> None:
        assert invalid_message(raw, reject_reserved=True) == RESERVED

    def test_reserved_is_checked_before_the_agent_shape(self) -> None:
        assert invalid_message("agent:-x:cron:y", reject_reserved=True) == INVALID
        assert invalid_message("cron:" + "x" * 600, reject_reserved=True) == RESERVED

    def test_reserved_namespaces_pass_without_the_check(self) -> None:
        assert normalize_session_key("cron:x", "main") == "agent:main:cron:x"

    def test_error_is_an_agent_error_with_the_message(self) -> None:
        with pytest.raises(InvalidSessionKey) as info:
            normalize_session_key("agent:x", "main")
        assert str(info.value) == INVALID


class TestParse:
    def test_splits_agent_and_rest(self) -> None:
        assert parse_session_key("agent:main:openai-user:bob") == ("main", "openai-user:bob")

    @pytest.mark.parametrize(
        "key", ["main", "agent:main", "agent:Main:x", "agent:main:X", "agent:main:" + "x" * 502]
    )
    def test_non_canonical_keys_are_invalid(self, key: str) -> None:
        with pytest.raises(InvalidSessionKey) as info:
            parse_session_key(key)
        assert info.value.message == INVALID


class TestPredicates:
    @pytest.mark.parametrize(
        ("key", "reserved"),
        [
            ("subagent:a", True),
            ("cron:a", True),
            ("acp:a", True),
            ("agent:main:subagent:a", True),
            ("Agent:Main:Cron:a", True),
            ("agent:main:cronx", False),
            ("agent:main:x:cron:a", False),
            ("agent:main:main", False),
            ("crontab", False),
        ],
    )
    def test_is_reserved(self, key: str, reserved: bool) -> None:
        assert is_reserved(key) is reserved

    def test_is_main_key(self) -> None:
        assert is_main_key("agent:main:main")
        assert is_main_key("agent:gone:main")  # agents removed from the config too
        assert is_main_key("agent:ops:home", "home")
        assert not is_main_key("agent:ops:main", "home")
        assert not is_main_key("agent:main:main:x")
        assert not is_main_key("main")
