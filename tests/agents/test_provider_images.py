"""Which images each provider's upstream takes (agents/providers/images.py)."""

from __future__ import annotations

import base64

import pytest

from agents.config import API_ANTHROPIC_MESSAGES, API_OPENAI_COMPLETIONS, ProviderConfig
from agents.providers.base import ImageInput
from agents.providers.images import image_refusal


def image(mime: str, size: int = 3) -> ImageInput:
    return ImageInput(mime, base64.b64encode(b"\0" * size).decode(), size)


def provider(api: str, base_url: str = "https://example.test/v1") -> ProviderConfig:
    return ProviderConfig(id="p", api=api, base_url=base_url)


PNG, HEIC = image("image/png"), image("image/heic")


class TestAnthropic:
    ANTHROPIC = provider(API_ANTHROPIC_MESSAGES, "https://api.anthropic.com")

    @pytest.mark.parametrize("mime", ["image/jpeg", "image/png", "image/gif", "image/webp"])
    def test_takes_its_documented_types(self, mime: str) -> None:
        assert image_refusal(self.ANTHROPIC, [image(mime)]) is None

    @pytest.mark.parametrize("mime", ["image/heic", "image/heif", "image/bmp"])
    def test_refuses_other_types(self, mime: str) -> None:
        assert image_refusal(self.ANTHROPIC, [PNG, image(mime)]) == (
            f"image 1 is {mime}, which provider 'p' refuses"
        )

    def test_takes_5_mib_of_base64_and_no_more(self) -> None:
        most = 5 * 1024 * 1024 * 3 // 4
        assert image_refusal(self.ANTHROPIC, [image("image/png", most)]) is None
        assert image_refusal(self.ANTHROPIC, [image("image/png", most + 1)]) == (
            "image 0 is 5242884 base64 characters (provider 'p' takes 5242880)"
        )


class TestOpenAICompatible:
    @pytest.mark.parametrize(
        "base_url", ["https://api.openai.com/v1", "https://API.OpenAI.com./v1"]
    )
    def test_api_openai_com_is_held_to_openais_documented_types(self, base_url: str) -> None:
        openai = provider(API_OPENAI_COMPLETIONS, base_url)
        assert image_refusal(openai, [PNG, image("image/webp")]) is None
        assert image_refusal(openai, [HEIC]) == "image 0 is image/heic, which provider 'p' refuses"

    def test_has_no_size_rule_of_ours(self) -> None:
        openai = provider(API_OPENAI_COMPLETIONS, "https://api.openai.com/v1")
        assert image_refusal(openai, [image("image/png", 10 * 1024 * 1024)]) is None

    @pytest.mark.parametrize(
        "base_url",
        [
            "http://127.0.0.1:11434/v1",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "https://api.openai.com.example.test/v1",
        ],
    )
    def test_any_other_server_gets_what_the_client_sent(self, base_url: str) -> None:
        assert image_refusal(provider(API_OPENAI_COMPLETIONS, base_url), [HEIC]) is None


def test_echo_takes_everything() -> None:
    assert image_refusal(None, [HEIC, image("image/png", 10 * 1024 * 1024)]) is None
