"""Which images each provider's upstream takes (agents/providers/images.py)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from agents.config import API_ANTHROPIC_MESSAGES, API_OPENAI_COMPLETIONS, ProviderConfig
from agents.providers.base import ImageInput
from agents.providers.images import image_dimensions, image_refusal

# The first bytes of an image of each type (HEIC's too): what the upstreams look at.
SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "image/gif": b"GIF89a",
    "image/webp": b"RIFF\0\0\0\0WEBPVP8 ",
    "image/heic": b"\0\0\0\x18ftypheic",
}


def image(mime: str, size: int = 16) -> ImageInput:
    head = SIGNATURES.get(mime, b"")
    data = head + b"\0" * (size - len(head))
    return ImageInput(mime, base64.b64encode(data).decode(), size)


def provider(api: str, base_url: str = "https://example.test/v1") -> ProviderConfig:
    return ProviderConfig(id="p", api=api, base_url=base_url)


PNG, HEIC = image("image/png"), image("image/heic")


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\xf7\0\0"


def jpeg(width: int, height: int, app_bytes: int = 16) -> bytes:
    # SOI, an APP1 segment (EXIF data comes there, up to 64 KiB), a DQT, then the frame.
    app1 = b"\xff\xe1" + struct.pack(">H", app_bytes + 2) + b"E" * app_bytes
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\0" * 65
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\0" * 9
    return b"\xff\xd8" + app1 + dqt + sof + b"\xff\xda\0\x08" + b"\0" * 6 + b"\xff\xd9"


def webp_lossy(width: int, height: int) -> bytes:
    frame = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(frame))
        + b"WEBPVP8 "
        + struct.pack("<I", len(frame))
        + frame
    )


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14
    data = b"\x2f" + struct.pack("<I", bits)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(data))
        + b"WEBPVP8L"
        + struct.pack("<I", len(data))
        + data
    )


def webp_extended(width: int, height: int) -> bytes:
    data = b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(data))
        + b"WEBPVP8X"
        + struct.pack("<I", len(data))
        + data
    )


def encoded(mime: str, data: bytes) -> ImageInput:
    return ImageInput(mime, base64.b64encode(data).decode(), len(data))


class TestDimensions:
    """The width and height an image's header gives, read without decoding the image."""

    @pytest.mark.parametrize("make", [png, gif, jpeg, webp_lossy, webp_lossless, webp_extended])
    def test_read_from_the_header(self, make: Any) -> None:
        assert image_dimensions(make(8001, 37)) == (8001, 37)
        assert image_dimensions(make(37, 4000)) == (37, 4000)

    def test_a_jpeg_frame_after_64_kib_of_exif_is_found(self) -> None:
        assert image_dimensions(jpeg(9000, 10, app_bytes=65_000)) == (9000, 10)

    @pytest.mark.parametrize(
        "data",
        [b"", b"\0" * 100, b"\x89PNG\r\n\x1a\n", b"GIF89a\x01", b"\xff\xd8\xff\xe1\xff\xff",
         b"\xff\xd8\xff\xd9", b"RIFF\0\0\0\0WEBPVP8 ", b"\xff\xd8" + b"\xff" * 100],
        ids=["empty", "zeros", "png-cut", "gif-cut", "jpeg-cut", "jpeg-no-frame", "webp-cut",
             "jpeg-fill"],
    )  # fmt: skip
    def test_unknown_or_cut_headers_give_none(self, data: bytes) -> None:
        assert image_dimensions(data) is None


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

    @pytest.mark.parametrize("data", [b"\0" * 16, b"<html>not found</html>", b"GIF8"])
    def test_refuses_bytes_that_are_no_image_of_those_types(self, data: bytes) -> None:
        # Anthropic answers 400 ("Could not process image"): the turn failed with a 502.
        assert image_refusal(self.ANTHROPIC, [PNG, encoded("image/png", data)]) == (
            "image 1 is no JPEG, PNG, GIF or WebP image, which provider 'p' refuses"
        )

    def test_takes_5_mib_of_base64_and_no_more(self) -> None:
        most = 5 * 1024 * 1024 * 3 // 4
        assert image_refusal(self.ANTHROPIC, [image("image/png", most)]) is None
        assert image_refusal(self.ANTHROPIC, [image("image/png", most + 1)]) == (
            "image 0 is 5242884 base64 characters (provider 'p' takes 5242880)"
        )

    @pytest.mark.parametrize("make", [png, gif, jpeg, webp_lossy, webp_lossless, webp_extended])
    def test_takes_8000_pixels_on_a_side_and_no_more(self, make: Any) -> None:
        # Anthropic answers 400 to a larger one ("At least one of the image dimensions
        # exceed max allowed size: 8000 pixels").
        mime = {png: "image/png", gif: "image/gif", jpeg: "image/jpeg"}.get(make, "image/webp")
        assert image_refusal(self.ANTHROPIC, [encoded(mime, make(8000, 8000))]) is None
        assert image_refusal(self.ANTHROPIC, [PNG, encoded(mime, make(100, 8001))]) == (
            "image 1 is 100x8001 pixels (provider 'p' takes at most 8000 on a side)"
        )

    def test_takes_2000_pixels_on_a_side_in_a_request_of_more_than_20_images(self) -> None:
        images = [encoded("image/png", png(2000, 2000))] * 20
        assert image_refusal(self.ANTHROPIC, images) is None
        assert image_refusal(self.ANTHROPIC, [*images, PNG]) is None
        assert image_refusal(self.ANTHROPIC, [*images, encoded("image/png", png(2001, 5))]) == (
            "image 20 is 2001x5 pixels (provider 'p' takes at most 2000 on a side"
            " in a request of more than 20 images)"
        )


class TestOpenAICompatible:
    @pytest.mark.parametrize(
        "base_url", ["https://api.openai.com/v1", "https://API.OpenAI.com./v1"]
    )
    def test_api_openai_com_is_held_to_openais_documented_types(self, base_url: str) -> None:
        openai = provider(API_OPENAI_COMPLETIONS, base_url)
        assert image_refusal(openai, [PNG, image("image/webp")]) is None
        assert image_refusal(openai, [HEIC]) == "image 0 is image/heic, which provider 'p' refuses"

    def test_api_openai_com_refuses_bytes_that_are_no_image_of_those_types(self) -> None:
        openai = provider(API_OPENAI_COMPLETIONS, "https://api.openai.com/v1")
        assert image_refusal(openai, [encoded("image/png", b"\0" * 16)]) == (
            "image 0 is no JPEG, PNG, GIF or WebP image, which provider 'p' refuses"
        )

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
