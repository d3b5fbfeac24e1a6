"""Decode untrusted image bytes into an RGB array plus an optional alpha mask.

Only JPEG, PNG and WebP are accepted, decided from the content (never from a file name or a
declared MIME type). The declared size is checked against a per-call pixel limit *before* the
pixels are decoded, so the limit does not depend on mutating ``Image.MAX_IMAGE_PIXELS``, which is
process-global and would race between threads with different limits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from imaging.budget import decode_cost
from imaging.errors import ImageDecodeError, ImageTooLargeError, UnsupportedFormatError

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
MIME_TYPES: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
DEFAULT_MAX_PIXELS = 40_000_000

# Magic numbers of image formats we recognise but refuse, so the error says "unsupported format"
# rather than "not an image".
_OTHER_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image in upright orientation.

    ``rgb`` is ``uint8`` of shape ``(height, width, 3)``; ``alpha`` is ``uint8`` ``(height, width)``
    or ``None`` when the source has no alpha channel or it is fully opaque.
    """

    rgb: npt.NDArray[np.uint8]
    alpha: npt.NDArray[np.uint8] | None
    format: str
    mime_type: str
    width: int
    height: int

    @property
    def has_alpha(self) -> bool:
        """True when the image carries a meaningful (not fully opaque) alpha channel."""
        return self.alpha is not None

    def to_pil(self) -> Image.Image:
        """Return the RGB pixels as a Pillow image (alpha dropped)."""
        return Image.fromarray(self.rgb, "RGB")


def sniff_format(data: bytes) -> str | None:
    """Return 'JPEG', 'PNG' or 'WEBP' when the leading bytes say so, else ``None``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _other_format_name(data: bytes) -> str | None:
    head = data[:16].lstrip()
    for magic, name in _OTHER_IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return "HEIF/AVIF"
    return None


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    draft_side: int | None = None,
    max_decode_bytes: int | None = None,
) -> DecodedImage:
    """Decode ``data`` (JPEG, PNG or WebP) fully into RGB plus optional alpha.

    EXIF orientation is applied; CMYK, palette (with or without transparency), 16-bit, grayscale,
    grayscale+alpha and RGBA sources are normalised. Raises ``UnsupportedFormatError`` for other
    formats, ``ImageTooLargeError`` above ``max_pixels`` (declared width × height) or ``max_bytes``,
    and ``ImageDecodeError`` for corrupt or truncated data.

    ``draft_side`` lets a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) as long as both sides
    stay at least that many pixels: much faster when only a small version is needed (a garment fed
    to a 512-pixel model). ``width``/``height`` are then those of the decoded pixels.

    ``max_decode_bytes`` bounds the memory the decode may take, estimated from the header's size,
    mode and bit depth (``imaging.budget``) before any pixel is decoded: ``ImageTooLargeError`` above it.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLargeError(f"image is {len(data):,} bytes, above the limit of {max_bytes:,} bytes")
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)")
    if sniff_format(data) is None:
        other = _other_format_name(data)
        if other is not None:
            raise UnsupportedFormatError(f"image format {other} is not supported; use JPEG, PNG or WebP")
        raise UnsupportedFormatError("data is not a JPEG, PNG or WebP image")

    try:
        img = Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("image header could not be read (corrupt or not an image)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image header is invalid: {exc}") from exc

    with img:
        fmt = img.format or "UNKNOWN"
        if fmt not in SUPPORTED_FORMATS:
            raise UnsupportedFormatError(f"image format {fmt} is not supported; use JPEG, PNG or WebP")
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError(f"image has an invalid size {width}x{height}")
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}"
            )
        if max_decode_bytes is not None and decode_cost(width, height, img.mode) > max_decode_bytes:
            raise ImageTooLargeError(
                f"image is {width}x{height} in mode {img.mode}: decoding it needs about "
                f"{decode_cost(width, height, img.mode) // 2**20:,} MiB, above the limit of "
                f"{max_decode_bytes // 2**20:,} MiB"
            )
        try:
            if draft_side is not None and fmt == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                img.draft(img.mode, (draft_side, draft_side))
            img.load()
            orientation = img.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                ImageOps.exif_transpose(img, in_place=True)
            rgb, alpha = _normalise(img)
        except ImageTooLargeError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise ImageDecodeError(f"{fmt} image does not decode (truncated or corrupt): {exc}") from exc

    return DecodedImage(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        mime_type=MIME_TYPES[fmt],
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
    )


def _scale_16bit(arr: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    # Pillow's convert() clips 16-bit values to 0..255 instead of scaling them. Computed in the
    # source's own width (never int64) so the working memory stays what imaging.budget assumes.
    values = np.asarray(arr)
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        return (values >> 8).astype(np.uint8)
    wide = np.clip(values, 0, 65535)
    wide >>= 8
    return wide.astype(np.uint8)


def _opaque_or_none(alpha: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
    if alpha.size == 0 or int(alpha.min()) == 255:
        return None
    return np.ascontiguousarray(alpha)


def _normalise(img: Image.Image) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """Convert any Pillow mode to (RGB uint8, alpha uint8 | None)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy(), None
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(rgba[:, :, :3]), _opaque_or_none(rgba[:, :, 3])
    if mode == "P":
        if "transparency" in img.info:
            return _normalise(img.convert("RGBA"))
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), None
    if mode.startswith("I;16") or mode == "I":
        gray = _scale_16bit(np.asarray(img))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    if mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's conversion is correct for 8-bit modes.
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), None
