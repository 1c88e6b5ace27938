"""Which images a provider's upstream takes (agents-sessions.md §6).

The gateway accepts the MIME types of `images.allowedMimes` (HEIC and HEIF among them) and
10 MiB per image; some upstreams take less (types, sizes, pixels: read from the image's
header, `image_dimensions`), and would refuse the whole turn. The gateway asks
here before a turn starts, so such a request is the client's 400, not a 502 after the call.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from urllib.parse import urlsplit

from agents.config import API_ANTHROPIC_MESSAGES, API_OPENAI_COMPLETIONS, ProviderConfig
from agents.providers.base import ImageInput

# Anthropic's Messages API: its documented types, and its 5 MB per image, which it measures
# on the base64 text ("image exceeds 5 MB maximum: 6405384 bytes > 5242880 bytes" answers
# 4,804,036 decoded bytes).
ANTHROPIC_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
ANTHROPIC_MAX_BASE64_CHARS = 5 * 1024 * 1024
# Its pixel limits: 8000 on a side, 2000 in a request of more than 20 images (its 400 reads
# "At least one of the image dimensions exceed max allowed size: 8000 pixels").
ANTHROPIC_MAX_SIDE = 8000
ANTHROPIC_MANY_IMAGES = 20
ANTHROPIC_MANY_IMAGES_MAX_SIDE = 2000
# OpenAI's documented types (the same four: `image_type` reads which one an image's bytes
# are). Only api.openai.com is held to them: other OpenAI-compatible servers (vLLM, Ollama,
# Gemini's endpoint) take other sets, which only they know.
OPENAI_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
OPENAI_HOST = "api.openai.com"


def image_refusal(provider: ProviderConfig | None, images: Sequence[ImageInput]) -> str | None:
    """Why `provider`'s upstream would refuse one of `images` (for the log), else None.
    None for the built-in echo provider and for upstreams whose rules are not known."""
    if provider is None:
        return None
    max_side = None
    if provider.api == API_ANTHROPIC_MESSAGES:
        types, max_chars = ANTHROPIC_IMAGE_TYPES, ANTHROPIC_MAX_BASE64_CHARS
        many = len(images) > ANTHROPIC_MANY_IMAGES
        max_side = ANTHROPIC_MANY_IMAGES_MAX_SIDE if many else ANTHROPIC_MAX_SIDE
    elif is_openai(provider):
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
        if image_type(image.data_b64) is None:
            # The upstream cannot read it ("Could not process image"): a text file or a
            # broken upload labelled an image.
            return (
                f"image {index} is no JPEG, PNG, GIF or WebP image,"
                f" which provider {provider.id!r} refuses"
            )
        if max_side is not None:
            size = _encoded_dimensions(image.data_b64)
            if size is not None and max(size) > max_side:
                many_images = f" in a request of more than {ANTHROPIC_MANY_IMAGES} images"
                return (
                    f"image {index} is {size[0]}x{size[1]} pixels (provider {provider.id!r}"
                    f" takes at most {max_side} on a side{many_images if many else ''})"
                )
    return None


# The base64 characters decoded to look for a header: a multiple of 4 (whole groups), 48 KiB
# of image. Only a JPEG's frame header may come later (after large EXIF or ICC segments):
# then the whole image is decoded.
_HEADER_CHARS = 64 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0..CF but DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _encoded_dimensions(data_b64: str) -> tuple[int, int] | None:
    try:
        head = base64.b64decode(data_b64[:_HEADER_CHARS])
        size = image_dimensions(head)
        if size is None and head[:2] == b"\xff\xd8" and len(data_b64) > _HEADER_CHARS:
            size = image_dimensions(base64.b64decode(data_b64))
    except (binascii.Error, ValueError):
        return None  # validated by the gateway; nothing to say about a payload that is not
    return size


def image_type(data_b64: str) -> str | None:
    """The MIME type an image's first bytes say it is (PNG, JPEG, GIF or WebP), else None.
    Clients label images by their file name or not at all: a PNG sent as image/jpeg is
    common, and Anthropic refuses it ("The image was specified using the image/jpeg media
    type, but the image appears to be a image/png image")."""
    try:
        head = base64.b64decode(data_b64[:16])  # 12 bytes: the longest signature (WebP)
    except (binascii.Error, ValueError):
        return None
    if head[:8] == _PNG:
        return "image/png"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, JPEG or WebP image's header; None when `data` is
    none of those, or its header is cut short or broken. Header bytes only: nothing is
    decoded, so an image that is broken further on still gets its size."""
    if data[:8] == _PNG:
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return int.from_bytes(data[16:20]), int.from_bytes(data[20:24])
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            return None
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"\xff\xd8":
        return _jpeg_dimensions(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_dimensions(data)
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """The frame header's size: the segments before it are skipped by their lengths."""
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length: TEM, RSTn
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan: no frame before it
            return None
        if marker in _JPEG_FRAMES:
            if at + 9 > end:
                return None
            height = int.from_bytes(data[at + 5 : at + 7])
            return int.from_bytes(data[at + 7 : at + 9]), height
        at += 2 + int.from_bytes(data[at + 2 : at + 4])
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    """The canvas of an extended (VP8X) WebP, else its one image's frame size."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        return width, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def is_openai(provider: ProviderConfig | None) -> bool:
    """An OpenAI-compatible provider that is OpenAI's own API, whose rules are known."""
    return (
        provider is not None
        and provider.api == API_OPENAI_COMPLETIONS
        and host_of(provider.base_url) == OPENAI_HOST
    )


def host_of(url: str) -> str:
    """A URL's host name, lower case, without a trailing dot; "" for none."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""
