"""Which images a provider's upstream takes (agents-sessions.md §6).

The gateway accepts the MIME types of `images.allowedMimes` (HEIC and HEIF among them) and
10 MiB per image; some upstreams take less, and would refuse the whole turn. The gateway asks
here before a turn starts, so such a request is the client's 400, not a 502 after the call.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from agents.config import API_ANTHROPIC_MESSAGES, API_OPENAI_COMPLETIONS, ProviderConfig
from agents.providers.base import ImageInput

# Anthropic's Messages API: its documented types, and its 5 MB per image, which it measures
# on the base64 text ("image exceeds 5 MB maximum: 6405384 bytes > 5242880 bytes" answers
# 4,804,036 decoded bytes).
ANTHROPIC_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
ANTHROPIC_MAX_BASE64_CHARS = 5 * 1024 * 1024
# OpenAI's documented types. Only api.openai.com is held to them: other OpenAI-compatible
# servers (vLLM, Ollama, Gemini's endpoint) take other sets, which only they know.
OPENAI_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
OPENAI_HOST = "api.openai.com"


def image_refusal(provider: ProviderConfig | None, images: Iterable[ImageInput]) -> str | None:
    """Why `provider`'s upstream would refuse one of `images` (for the log), else None.
    None for the built-in echo provider and for upstreams whose rules are not known."""
    if provider is None:
        return None
    if provider.api == API_ANTHROPIC_MESSAGES:
        types, max_chars = ANTHROPIC_IMAGE_TYPES, ANTHROPIC_MAX_BASE64_CHARS
    elif provider.api == API_OPENAI_COMPLETIONS and _host(provider.base_url) == OPENAI_HOST:
        types, max_chars = OPENAI_IMAGE_TYPES, None
    else:
        return None
    for index, image in enumerate(images):
        if image.mime_type not in types:
            return f"image {index} is {image.mime_type}, which provider {provider.id!r} refuses"
        if max_chars is not None and len(image.data_b64) > max_chars:
            return (
                f"image {index} is {len(image.data_b64)} base64 characters"
                f" (provider {provider.id!r} takes {max_chars})"
            )
    return None


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""
