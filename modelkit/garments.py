"""Test garments drawn by code, made to be hard for a background-colour mask (issue 21).

* ``white-on-white``: a white tee with faint fold shading on a white background (JPEG);
* ``stripes``: a navy tee with white stripes that reach its outline, on white (JPEG);
* ``soft-shadow``: a red tee casting a soft grey shadow on a light-grey background (JPEG);
* ``cutout``: a red tee with yellow dots, cut out as an RGBA PNG (its alpha is the mask).

Each comes with the fraction of its own pixels that are light (for the "light parts stay light" check).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 512


def tee_outline(size: int = SIZE) -> list[tuple[float, float]]:
    """A short-sleeved tee, front view, as a polygon on a ``size`` square."""
    s = size / 512
    pts = [(196, 70), (226, 92), (256, 100), (286, 92), (316, 70), (400, 106), (452, 196), (392, 226),
           (370, 190), (372, 450), (140, 450), (142, 190), (120, 226), (60, 196), (112, 106)]
    return [(x * s, y * s) for x, y in pts]


def _tee_mask(size: int = SIZE) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(tee_outline(size), fill=255)
    return mask


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=92)
    return out.getvalue()


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _folds(size: int) -> Image.Image:
    """Gentle vertical fold shading in [0.9, 1.0] as an ``L`` image (255 = no shading)."""
    x = np.arange(size, dtype=np.float32)
    shade = 1.0 - 0.05 * (1 + np.sin(x / size * 9.0))
    return Image.fromarray(np.tile((shade * 255).astype(np.uint8), (size, 1)), "L")


def white_on_white(size: int = SIZE) -> bytes:
    """A white tee (folds, a thin grey seam line) on a white background."""
    bg = Image.new("RGB", (size, size), (255, 255, 255))
    white = Image.merge("RGB", [_folds(size).point(lambda v: min(255, v + 6))] * 3)
    mask = _tee_mask(size)
    bg.paste(white, (0, 0), mask)
    ImageDraw.Draw(bg).line([*tee_outline(size), tee_outline(size)[0]], fill=(214, 214, 214), width=2)
    return _jpeg(bg)


def stripes(size: int = SIZE) -> bytes:
    """A navy tee with white horizontal stripes reaching the outline, on white."""
    bg = Image.new("RGB", (size, size), (255, 255, 255))
    cloth = Image.new("RGB", (size, size), (28, 36, 84))
    draw = ImageDraw.Draw(cloth)
    step = size // 12
    for y in range(step // 2, size, step):
        draw.rectangle((0, y, size, y + step // 2), fill=(252, 252, 252))
    bg.paste(cloth, (0, 0), _tee_mask(size))
    return _jpeg(bg)


def soft_shadow(size: int = SIZE) -> bytes:
    """A red tee with a soft grey drop shadow on a light-grey background."""
    bg = Image.new("RGB", (size, size), (232, 232, 232))
    shadow = _tee_mask(size).transform((size, size), Image.Transform.AFFINE, (1, 0, -14, 0, 1, -16))
    shadow = shadow.filter(ImageFilter.GaussianBlur(12)).point(lambda v: v * 0.45)
    bg.paste(Image.new("RGB", (size, size), (120, 120, 120)), (0, 0), shadow)
    bg.paste(Image.new("RGB", (size, size), (196, 30, 40)), (0, 0), _tee_mask(size))
    return _jpeg(bg)


def cutout(size: int = SIZE) -> bytes:
    """A red tee with yellow dots, cut out (RGBA PNG)."""
    cloth = Image.new("RGB", (size, size), (200, 28, 36))
    draw = ImageDraw.Draw(cloth)
    step = size // 10
    for y in range(step // 2, size, step):
        for x in range(step // 2 + (y // step % 2) * step // 2, size, step):
            draw.ellipse((x - 9, y - 9, x + 9, y + 9), fill=(250, 214, 40))
    cloth.putalpha(_tee_mask(size))
    return _png(cloth)


def hard_garments() -> list[tuple[str, bytes]]:
    """The four hard garments, labelled."""
    return [("white-on-white", white_on_white()), ("stripes", stripes()), ("soft-shadow", soft_shadow()),
            ("cutout", cutout())]
