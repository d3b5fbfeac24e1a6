"""The garment's silhouette in a product photo without alpha: what is not background, closed, hole-filled.

A colour-distance mask alone loses every part of the garment that looks like the background: the
white stripes of a shirt photographed on white, a cream collar on cream. The silhouette instead is
the *outline* of what is not background:

1. background colour = per-channel median of the canvas border;
2. seeds = pixels clearly away from that colour, but not a shadow (a shadow is the background's own
   colour darkened evenly across the channels), plus sharp edges (the faint outline of a white
   garment on white shows as an edge even where its colour matches);
3. closed along columns and rows (bridges the gaps that light stripes leave in the outline);
4. holes filled: background is only what the border reaches through non-garment pixels, so a light
   stripe, a print or a highlight inside the outline is garment; where the outline runs off the
   photo (a hem or a sleeve cut by a tight crop), the border between its crossings is no start;
5. only the filled region holding the point nearest the seeds' median is kept (separate objects
   of a cluttered background are dropped), and the edge is softened;
6. when that region is nearly the whole canvas, the background is textured (wood, fabric: its own
   edges and shades are everywhere): the garment is then what shows none of the border's colours
   (a 16-level colour histogram of the border), filled the same way.

Pure numpy (no scipy): flood fills propagate along row and column runs until nothing changes, at
most ``MAX_PASSES`` passes; the canvas has the model's fixed size, so time and memory are bounded.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]

COLOUR_DISTANCE = 0.10  # max channel distance from the background that counts as garment
EDGE = 0.035  # luminance step between neighbours that counts as an outline
SHADOW_SPREAD = 0.05  # a shadow darkens all channels by nearly the same factor
CLOSE_ROWS = 0.08  # vertical closing span, × canvas height (light stripes up to this tall)
CLOSE_COLS = 0.03  # horizontal closing span, × canvas width
TEXTURED = 0.9  # a garment found over more than this share of the canvas: the background is textured
MIN_FOUND = 0.03  # ... and the garment by the border's colours is taken when it covers more than this
PALETTE_SHARE = 0.002  # a colour bin is the background's when it holds this share of the border
MAX_PASSES = 24  # run-propagation passes of a flood fill (each pass: rows, then columns)


class NoGarmentError(Exception):
    """Nothing in the garment photo stands out as a garment (or its cut-out is empty): permanent."""

    error_type = "no_garment"
    transient = False


def _dilate(mask: Bool, span: int, axis: int) -> Bool:
    """Binary dilation by a line of ``span`` pixels along ``axis`` (doubling shifts)."""
    out = mask.copy()
    reach = 1
    radius = span // 2
    while reach <= radius:
        step = min(reach, radius - reach + 1)
        shifted = np.zeros_like(out)
        if axis == 0:
            shifted[step:] |= out[:-step]
            shifted[:-step] |= out[step:]
        else:
            shifted[:, step:] |= out[:, :-step]
            shifted[:, :-step] |= out[:, step:]
        out |= shifted
        reach += step
    return out


def _close(mask: Bool, span: int, axis: int) -> Bool:
    """Binary closing along one axis: fills gaps shorter than ``span`` between set pixels."""
    if span < 3:
        return mask
    grown = _dilate(mask, span, axis)
    return ~_dilate(~grown, span, axis)


def _spread(seed: Bool, passable: Bool) -> Bool:
    """The pixels of ``passable`` connected to ``seed`` (4-connected), by propagating along runs."""
    reached = seed & passable
    for _ in range(MAX_PASSES):
        before = int(reached.sum())
        for axis in (1, 0):
            arr = reached if axis == 1 else reached.T
            ok = passable if axis == 1 else passable.T
            # Run ids: a new id starts at every blocked pixel; a run is reached if any pixel of it is.
            ids = np.cumsum(~ok, axis=1) + np.arange(ok.shape[0])[:, None] * (ok.shape[1] + 1)
            hit = np.zeros(ok.shape[0] * (ok.shape[1] + 1) + ok.shape[1] + 1, dtype=bool)
            hit[ids[arr]] = True
            grown = hit[ids] & ok
            reached = grown if axis == 1 else grown.T
        if int(reached.sum()) == before:
            break
    return reached


def _border_starts(fg: Bool) -> Bool:
    """The border pixels the background's fill starts from.

    Every border pixel, except where the garment runs off the photo: on a side the outline crosses
    (a hem or a sleeve cut by a tight crop), what lies between its first and last crossing is the
    garment's cut edge, not background; a fill from there would flood a white garment on white.
    """
    starts = np.zeros_like(fg)
    starts[[0, -1], :] = True
    starts[:, [0, -1]] = True
    cut = np.zeros_like(fg)
    for line, side in ((fg[0], cut[0]), (fg[-1], cut[-1]), (fg[:, 0], cut[:, 0]), (fg[:, -1], cut[:, -1])):
        hits = np.flatnonzero(line)
        if hits.size >= 2:
            side[hits[0]:hits[-1] + 1] = True
    return starts & ~cut


def _pool_any(mask: Bool, h: int, w: int) -> Bool:
    """2×2 OR-pooling to ``h`` × ``w``."""
    m = mask[:h * 2, :w * 2]
    return m[0::2, 0::2] | m[1::2, 0::2] | m[0::2, 1::2] | m[1::2, 1::2]


def _cmax(a: F32) -> F32:
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _cmin(a: F32) -> F32:
    return np.minimum(np.minimum(a[..., 0], a[..., 1]), a[..., 2])


def _garment_region(seeds: Bool, fg: Bool) -> F32:
    """The garment at quarter resolution from half-resolution ``seeds`` (sure garment) and ``fg``
    (garment or outline): pooled, closed, filled from the border, the part around the seeds kept."""
    h, w = seeds.shape[0] // 2, seeds.shape[1] // 2
    fg = _pool_any(fg, h, w)
    seeds = _pool_any(seeds, h, w)
    # Grown by one pixel so a thin or anti-aliased outline blocks the flood, shrunk back after the fill.
    fg = _dilate(_dilate(fg, 3, 0), 3, 1)
    fg = _close(fg, max(3, int(CLOSE_ROWS * h) | 1), 0) | _close(fg, max(3, int(CLOSE_COLS * w) | 1), 1)
    background = _spread(_border_starts(fg), ~fg)
    filled = ~_dilate(_dilate(background, 3, 0), 3, 1)
    if not filled.any():
        return np.zeros((h, w), dtype=np.float32)
    # Keep the region around the largest mass of strong seeds (the garment), not stray clutter.
    core = seeds & filled
    rows, cols = np.nonzero(core if core.any() else filled)
    cy, cx = float(np.median(rows)), float(np.median(cols))
    candidates = np.argwhere(filled)
    start = candidates[np.argmin((candidates[:, 0] - cy) ** 2 + (candidates[:, 1] - cx) ** 2)]
    seed = np.zeros((h, w), dtype=bool)
    seed[start[0], start[1]] = True
    return _spread(seed, filled).astype(np.float32)


def _background_colours(img: F32, border: F32) -> Bool:
    """Pixels of ``img`` (H×W×3 in [0, 1]) whose colour the border shows too (within one bin).

    The border's colours are counted in a 16-level-per-channel histogram; bins holding at least
    ``PALETTE_SHARE`` of the border, grown by one bin each way, are the background's palette.
    """
    levels = 16

    def bins(a: F32) -> npt.NDArray[np.intp]:
        q = np.clip((a * levels).astype(np.intp), 0, levels - 1)
        return np.asarray((q[..., 0] * levels + q[..., 1]) * levels + q[..., 2])

    counts = np.bincount(bins(border).ravel(), minlength=levels ** 3).reshape(levels, levels, levels)
    palette = counts >= max(1.0, PALETTE_SHARE * len(border))
    grown = palette.copy()
    for axis in range(3):
        grown |= np.roll(palette, 1, axis) | np.roll(palette, -1, axis)
    return np.asarray(grown.ravel()[bins(img)])


def silhouette(rgb: npt.NDArray[np.uint8]) -> F32:
    """The garment's mask (H×W in [0, 1]) in an RGB product photo ``rgb`` (H×W×3 ``uint8``).

    Colours and edges are read at half resolution (2×2 means); the outline is then pooled to a
    quarter (a pixel is outline if any of its 2×2 is, so thin outlines survive), closed, filled and
    brought back bilinearly: the mask is only ever used warped onto the person, and this keeps it
    at a few milliseconds.
    """
    full_h, full_w = rgb.shape[:2]
    h, w = full_h // 2, full_w // 2
    src = rgb[:h * 2, :w * 2].astype(np.float32)
    img = (src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2]) * np.float32(1 / 1020)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    dist = _cmax(np.abs(img - bg))
    ratio = (img + 0.02) / (bg + 0.02)
    top = _cmax(ratio)
    shadow = (top < 0.98) & (top - _cmin(ratio) < SHADOW_SPREAD)
    seeds = (dist > COLOUR_DISTANCE) & ~shadow
    lum = img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    edge = np.zeros((h, w), dtype=bool)
    edge[:, 1:] |= np.abs(np.diff(lum, axis=1)) > EDGE
    edge[1:] |= np.abs(np.diff(lum, axis=0)) > EDGE
    garment = _garment_region(seeds, seeds | edge)
    if garment.mean() > TEXTURED:
        # Everything stood out: a textured background (wood, fabric, a print) whose own edges and
        # shades are everywhere. Then the garment is what shows none of the border's colours.
        unlike = ~_background_colours(img, border)
        other = _garment_region(unlike, unlike)
        if MIN_FOUND < other.mean() < TEXTURED:
            garment = other
    h, w = garment.shape
    # A one-pixel soft edge (3×3 box) so the warped mask has no stair steps.
    padded = np.pad(garment, 1, mode="edge")
    soft = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    img_mask = Image.fromarray(np.asarray(soft, dtype=np.float32), "F")
    return np.asarray(img_mask.resize((full_w, full_h), Image.Resampling.BILINEAR), dtype=np.float32)
