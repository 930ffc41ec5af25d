"""Image bytes: types and sizes from real encoders' output, base64 heads and data: URLs."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from responsa.imagebytes import base64_head, data_url, data_url_parts, from_base64, image_size, image_type


def encoded(fmt: str, size: tuple[int, int] = (37, 21)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                           ("GIF", "image/gif")])
def test_image_type(fmt: str, mime: str) -> None:
    data = encoded(fmt)
    assert image_type(data) == mime
    assert image_type(data[:12]) == mime  # the first 12 bytes are enough


def test_not_an_image() -> None:
    for data in (b"", b"%PDF-1.7\n", b"hello world, not an image", b"RIFF\x00\x00\x00\x00WAVE"):
        assert image_type(data) is None
        assert image_size(data) is None


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG"])
def test_image_size(fmt: str) -> None:
    assert image_size(encoded(fmt, (640, 48))) == (640, 48)


def test_image_size_needs_the_header() -> None:
    png = encoded("PNG")
    assert image_size(png[:24]) == (37, 21)
    assert image_size(png[:23]) is None


def test_base64_head_decodes_only_the_start() -> None:
    png = encoded("PNG")
    text = base64.b64encode(png).decode()
    assert base64_head(text, 33) == png[:33]
    assert base64_head(text, 32) == png[:33]  # whole groups of 3 bytes
    assert base64_head(text[:40] + "!!!!" + text[44:], 24) == png[:24]  # the rest is not looked at
    assert base64_head("!!!!" + text, 24) == b""
    assert base64_head("", 24) == b""


def test_from_base64_is_strict() -> None:
    assert from_base64("aGk=") == b"hi"
    for bad in ("aGk", "aG k=", "a?k="):
        with pytest.raises(ValueError):
            from_base64(bad)


def test_data_urls() -> None:
    url = data_url("image/png", b"\x89PNG")
    assert url == "data:image/png;base64,iVBORw=="
    assert data_url_parts(url) == ("image/png", "iVBORw==")
    assert data_url_parts("data:Image/PNG;name=a.png;base64,AAAA") == ("image/png", "AAAA")
    assert data_url_parts("data:image/png;base64") == ("image/png", "")
    assert data_url_parts("data:image/png,AAAA") is None  # not base64
    assert data_url_parts("https://example.com/a.png") is None
