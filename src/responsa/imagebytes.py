"""Image bytes: their type and size read from the first bytes, and the base64 and `data:` URL
forms they travel in (input parts, screenshots, the Images API's answers)."""

from __future__ import annotations

import base64
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, WebP or GIF image from its first 12 bytes."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF or JPEG image from its header."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + length
    return None


def from_base64(text: str) -> bytes:
    """Strict base64 (no characters outside the alphabet); ValueError when it is not."""
    return base64.b64decode(text, validate=True)


def base64_head(text: str, size: int) -> bytes:
    """The first `size` bytes (rounded up to a multiple of 3) of base64 text, without decoding the
    rest: enough to read a header. b"" when that much is not base64."""
    try:
        return from_base64(text[:-(-size // 3) * 4])
    except ValueError:
        return b""


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def data_url_parts(url: str) -> tuple[str, str] | None:
    """(MIME type, base64 payload) of a `data:<mime>[;...];base64,<payload>` URL, or None when its
    header is not that. The payload is what follows the first comma ("" without one)."""
    header, _, payload = url.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        return None
    return header[5:-7].split(";", 1)[0].strip().lower(), payload
