"""What decoding an image will cost in memory, read from its header before a pixel is decoded.

A small file can decode into a very large array (a 90 KB 16-bit PNG into gigabytes of working
memory), so the byte and pixel limits alone do not bound a decoder's memory. The cost here is the
peak of :func:`imaging.decode.decode_image` for the header's mode: Pillow's own buffer for that
mode and bit depth, plus the arrays the normalisation to 8-bit RGB makes on the way, plus the
RGB copy the thumbnail is made from.
"""

from __future__ import annotations

#: Bytes per pixel of Pillow's buffer for each mode (RGB and YCbCr are stored as 4 bytes a pixel).
MODE_BYTES: dict[str, int] = {
    "1": 1, "L": 1, "P": 1, "LA": 4, "La": 4, "PA": 4, "RGB": 4, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4,
    "YCbCr": 4, "LAB": 4, "HSV": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4,
}
#: Extra working bytes per pixel the normalisation makes for a mode beyond the common part.
_NORMALISE_BYTES: dict[str, int] = {
    # 16-bit and 32-bit grey: the array view, its shifted copy, then the 8-bit grey.
    "I;16": 5, "I;16L": 5, "I;16B": 5, "I;16N": 5, "I": 9, "F": 9,
    # Modes with alpha and palettes go through an RGBA conversion first.
    "LA": 8, "La": 8, "PA": 8, "P": 8, "RGBA": 4, "RGBa": 8,
}
#: Bytes per pixel every decode holds at its peak beyond Pillow's buffer: the RGB array and its
#: intermediate (3 + 3), the alpha mask (1) and the Pillow RGB image the thumbnail starts from (4).
COMMON_BYTES = 11
#: The cost assumed for a mode not listed (the most expensive one listed).
UNKNOWN_MODE_BYTES = 4 + 9


def bytes_per_pixel(mode: str) -> int:
    """Peak bytes per pixel of decoding an image of Pillow ``mode`` into RGB plus alpha."""
    if mode not in MODE_BYTES:
        return UNKNOWN_MODE_BYTES + COMMON_BYTES
    return MODE_BYTES[mode] + _NORMALISE_BYTES.get(mode, 0) + COMMON_BYTES


def decode_cost(width: int, height: int, mode: str) -> int:
    """Estimated peak bytes of decoding a ``width`` × ``height`` image of ``mode``."""
    return max(0, width) * max(0, height) * bytes_per_pixel(mode)
