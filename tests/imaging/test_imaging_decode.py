"""Decode/encode: every input mode, every refusal, and the synthetic samples."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from imaging import (
    DecodedImage,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedFormatError,
    decode_image,
    encode_image,
    make_thumbnail,
)
from modelkit.samples import make_garment, make_person, sample_pair, to_bytes

MAX = 10_000_000


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB); ``rows=None`` gives a header only."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    if rows is not None:
        out += png_chunk(b"IDAT", zlib.compress(rows))
    return out + png_chunk(b"IEND", b"")


def test_jpeg_rgb_basic() -> None:
    img = Image.new("RGB", (40, 30), (200, 30, 40))
    d = decode_image(save(img, "JPEG", quality=95), max_pixels=MAX)
    assert isinstance(d, DecodedImage)
    assert (d.format, d.mime_type, d.width, d.height) == ("JPEG", "image/jpeg", 40, 30)
    assert d.rgb.shape == (30, 40, 3) and d.rgb.dtype == np.uint8
    assert d.alpha is None
    assert np.abs(d.rgb.astype(int) - [200, 30, 40]).max() < 6


def test_exif_orientation_applied() -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = save(img, "JPEG", quality=95, exif=exif.tobytes())
    d = decode_image(data, max_pixels=MAX)
    assert (d.width, d.height) == (20, 40)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(d.rgb, expected)
    # Orientation 6: the left (red) half ends up on top.
    assert d.rgb[5, 10, 0] > 200 and d.rgb[35, 10, 2] > 200


def test_cmyk_jpeg_to_rgb() -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    d = decode_image(save(img, "JPEG", quality=95), max_pixels=MAX)
    assert d.rgb[8, 8, 0] > 230 and d.rgb[8, 8, 1] < 25 and d.rgb[8, 8, 2] < 25


def test_palette_with_transparency_gives_alpha() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    img.paste(1, (2, 2, 8, 8))
    d = decode_image(save(img, "PNG", transparency=0), max_pixels=MAX)
    assert d.alpha is not None
    assert d.alpha[0, 0] == 0 and d.alpha[5, 5] == 255
    assert tuple(d.rgb[5, 5]) == (200, 0, 0)


def test_palette_without_transparency() -> None:
    img = Image.new("P", (10, 10), 1)
    img.putpalette([0, 0, 0, 10, 120, 230] + [0] * 762)
    d = decode_image(save(img, "PNG"), max_pixels=MAX)
    assert d.alpha is None and tuple(d.rgb[0, 0]) == (10, 120, 230)


def test_16bit_grayscale_png_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(4, axis=0)
    data = save(Image.fromarray(ramp), "PNG")
    d = decode_image(data, max_pixels=MAX)
    assert np.array_equal(d.rgb[:, :, 0], (ramp >> 8).astype(np.uint8))
    assert d.rgb[0, 32, 0] not in (0, 255)  # a clipping convert() would give 255 here


def test_16bit_rgb_png() -> None:
    h, w = 4, 6
    px = np.zeros((h, w, 3), dtype=">u2")
    px[...] = (65535, 32768, 0)
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    d = decode_image(raw_png(w, h, 16, 2, rows), max_pixels=MAX)
    assert tuple(d.rgb[1, 1]) == (255, 128, 0)


def test_grayscale_and_la() -> None:
    d = decode_image(save(Image.new("L", (8, 8), 77), "PNG"), max_pixels=MAX)
    assert tuple(d.rgb[0, 0]) == (77, 77, 77) and d.alpha is None
    la = Image.new("LA", (8, 8), (90, 0))
    la.paste((90, 255), (0, 0, 4, 8))
    d = decode_image(save(la, "PNG"), max_pixels=MAX)
    assert d.alpha is not None and d.alpha[0, 0] == 255 and d.alpha[0, 7] == 0
    assert tuple(d.rgb[0, 0]) == (90, 90, 90)


def test_rgba_garment_alpha_kept_and_opaque_alpha_dropped() -> None:
    garment = make_garment(96, 96, transparent=True)
    d = decode_image(to_bytes(garment, "PNG"), max_pixels=MAX)
    assert d.alpha is not None
    assert np.array_equal(d.alpha, np.asarray(garment)[:, :, 3])
    opaque = decode_image(save(Image.new("RGBA", (8, 8), (1, 2, 3, 255)), "PNG"), max_pixels=MAX)
    assert opaque.alpha is None


def test_webp_lossy_and_lossless_alpha() -> None:
    d = decode_image(save(Image.new("RGB", (20, 20), (10, 200, 30)), "WEBP", quality=90), max_pixels=MAX)
    assert (d.format, d.mime_type) == ("WEBP", "image/webp")
    assert np.abs(d.rgb.astype(int) - [10, 200, 30]).max() < 8
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((250, 0, 0, 255), (5, 5, 15, 15))
    d = decode_image(save(rgba, "WEBP", lossless=True), max_pixels=MAX)
    assert d.alpha is not None and d.alpha[0, 0] == 0 and d.alpha[10, 10] == 255


def test_pixel_limit_checked_before_decoding() -> None:
    data = save(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageTooLargeError, match="10,000 pixels"):
        decode_image(data, max_pixels=5_000)
    # A header claiming 3000x3000 with no pixel data: refused from the header alone.
    with pytest.raises(ImageTooLargeError):
        decode_image(raw_png(3000, 3000, 8, 2, None), max_pixels=1_000_000)


def test_decompression_bomb_refused() -> None:
    bomb = raw_png(60_000, 60_000, 8, 2, None)  # 3.6 Gpx, above Pillow's own 2x limit too
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, max_pixels=10**12)


def test_byte_limit() -> None:
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(save(Image.new("RGB", (50, 50)), "PNG"), max_pixels=MAX, max_bytes=10)


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (b"hello, this is not an image", UnsupportedFormatError, "not a JPEG, PNG or WebP"),
        (save(Image.new("RGB", (4, 4)), "GIF"), UnsupportedFormatError, "GIF"),
        (save(Image.new("RGB", (4, 4)), "BMP"), UnsupportedFormatError, "BMP"),
        (save(Image.new("RGB", (4, 4)), "TIFF"), UnsupportedFormatError, "TIFF"),
        (b"", ImageDecodeError, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, ImageDecodeError, "header"),
    ],
)
def test_refusals(data: bytes, error: type[ImageError], text: str) -> None:
    with pytest.raises(error, match=text):
        decode_image(data, max_pixels=MAX)


def test_truncated_jpeg_refused() -> None:
    data = to_bytes(make_person(64, 96).image)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2], max_pixels=MAX)


def test_error_codes_are_stable() -> None:
    assert (UnsupportedFormatError.error_type, ImageDecodeError.error_type, ImageTooLargeError.error_type) == (
        "unsupported_format",
        "invalid_image",
        "image_too_large",
    )
    assert not any(e.transient for e in (ImageError, UnsupportedFormatError, ImageDecodeError, ImageTooLargeError))


def test_jpeg_draft_decodes_smaller() -> None:
    data = to_bytes(make_person(800, 800).image)
    d = decode_image(data, max_pixels=MAX, draft_side=200)
    assert 200 <= d.width < 800 and d.width == d.height


def test_encode_jpeg_webp_and_png_refused() -> None:
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[:, :, 1] = 180
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF")):
        data = encode_image(rgb, fmt, 90)
        assert data.startswith(magic)
        back = decode_image(data, max_pixels=MAX)
        assert (back.width, back.height) == (20, 30)
    with pytest.raises(ValueError, match="PNG"):
        encode_image(rgb, "png", 90)


def test_thumbnail_keeps_aspect() -> None:
    data = make_thumbnail(Image.new("RGB", (400, 200), (9, 9, 9)), 100)
    d = decode_image(data, max_pixels=MAX)
    assert (d.format, d.width, d.height) == ("JPEG", 100, 50)


def test_samples_deterministic_and_pose_varies() -> None:
    assert sample_pair(3, person_size=(96, 128), garment_size=(64, 64)) == sample_pair(
        3, person_size=(96, 128), garment_size=(64, 64)
    )
    a = make_person(192, 256, offset_x=-0.15, scale=0.7)
    b = make_person(192, 256, offset_x=0.15, scale=0.9)
    assert a.torso != b.torso and a.head != b.head
    assert np.array_equal(np.asarray(a.image), np.asarray(make_person(192, 256, offset_x=-0.15, scale=0.7).image))
    g = make_garment(64, 64, transparent=True)
    assert g.mode == "RGBA" and np.asarray(g)[0, 0, 3] == 0
