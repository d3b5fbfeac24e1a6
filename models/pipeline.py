"""Pre- and post-processing between decoded images and a model's NCHW tensors (numpy + Pillow).

No onnxruntime here: these functions are pure and shared by the runner and the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from imaging.decode import DecodedImage
from models.contract import InputSpec, ModelManifest, OutputSpec
from models.garment import NoGarmentError, silhouette

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
# Downscale by integer box-reduction first, then bilinear: ~6x faster than plain bilinear at
# 1024 -> 512 with no visible difference at the model's input size.
_REDUCING_GAP = 1.0
# Extra contract pixels kept around the garment's box so bilinear upsampling has its neighbours.
_MARGIN = 2
# A garment's alpha with less than this share transparent is a stray channel, not a cut-out.
MIN_CUTOUT_CLEAR = 0.01
# A garment mask covering less than this share of its photo is no garment found.
MIN_GARMENT_SHARE = 0.03


@dataclass(frozen=True)
class Placement:
    """Where a source image of ``src_w`` × ``src_h`` sits on the model's canvas."""

    left: int
    top: int
    width: int
    height: int
    src_w: int
    src_h: int
    canvas_w: int
    canvas_h: int


def place(src_w: int, src_h: int, canvas_w: int, canvas_h: int, mode: str) -> Placement:
    """Letterbox (aspect kept, centred) or stretch a source image onto the canvas."""
    if mode == "stretch":
        return Placement(0, 0, canvas_w, canvas_h, src_w, src_h, canvas_w, canvas_h)
    scale = min(canvas_w / src_w, canvas_h / src_h)
    w = min(canvas_w, max(1, round(src_w * scale)))
    h = min(canvas_h, max(1, round(src_h * scale)))
    return Placement((canvas_w - w) // 2, (canvas_h - h) // 2, w, h, src_w, src_h, canvas_w, canvas_h)


def _pad(arr: npt.NDArray[np.uint8], pl: Placement, mode: str) -> U8:
    pads = [(pl.top, pl.canvas_h - pl.top - pl.height), (pl.left, pl.canvas_w - pl.left - pl.width)]
    if arr.ndim == 3:
        pads.append((0, 0))
    if all(a == 0 and b == 0 for a, b in pads):
        return arr
    # Edge padding keeps the border colour the model estimates the background from.
    if mode == "edge":
        return np.pad(arr, pads, mode="edge")
    return np.pad(arr, pads, mode="constant", constant_values=0)


def resize_to_canvas(rgb: U8, pl: Placement, padding: str = "edge") -> U8:
    """Resize an RGB ``uint8`` image into its placement and pad the canvas (edge replication or zeros)."""
    img = Image.fromarray(rgb, "RGB")
    if (pl.width, pl.height) != img.size:
        img = img.resize((pl.width, pl.height), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    return _pad(np.asarray(img), pl, "edge" if padding == "edge" else "zero")


def prepare_person_stage(manifest: ModelManifest, person: DecodedImage) -> tuple[F32, Placement]:
    """A person stage's one input (CHW) and where the photo sits on its canvas."""
    spec = manifest.person_input
    placement = place(person.width, person.height, spec.width, spec.height, manifest.resize)
    return normalise(resize_to_canvas(person.rgb, placement, manifest.padding), spec), placement


def resize_mask_to_canvas(alpha: U8, pl: Placement) -> U8:
    """Resize a ``uint8`` mask into its placement; outside the image is 0 (transparent)."""
    img = Image.fromarray(alpha, "L")
    if (pl.width, pl.height) != img.size:
        img = img.resize((pl.width, pl.height), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    return _pad(np.asarray(img), pl, "zero")


def normalise(arr: U8, spec: InputSpec) -> F32:
    """``uint8`` HWC (or HW) -> float32 CHW with the input's range, mean and std applied.

    The result may be a transposed view: ``np.stack`` builds the contiguous NCHW batch anyway, so
    transposing here as well would copy every image twice.
    """
    hwc = arr[:, :, None] if arr.ndim == 2 else arr
    lo, hi = spec.value_range
    std = np.asarray(spec.std, dtype=np.float32)
    scale = np.float32((hi - lo) / 255.0) / std
    offset = (np.float32(lo) - np.asarray(spec.mean, dtype=np.float32)) / std
    out = hwc.astype(np.float32)
    out *= scale
    if offset.any():
        out += offset
    return out.transpose(2, 0, 1)


def is_cutout(alpha: U8 | None) -> bool:
    """Whether a garment's alpha cuts the garment out: at least ``MIN_CUTOUT_CLEAR`` of it transparent.

    A product photo saved as RGBA but opaque nearly everywhere (a transparent frame or corner) is a
    photo on its background, to be cut out by its silhouette, not pasted whole.
    """
    return alpha is not None and float(np.count_nonzero(alpha < 128)) >= MIN_CUTOUT_CLEAR * alpha.size


def _require_garment(mask: U8, pl: Placement, why: str) -> None:
    """Raise ``NoGarmentError`` when ``mask`` covers less than ``MIN_GARMENT_SHARE`` of the photo.

    Pasting a garment that was not found would return the person photo unchanged as a success.
    """
    photo = mask[pl.top:pl.top + pl.height, pl.left:pl.left + pl.width]
    share = float(np.count_nonzero(photo >= 128)) / max(1, photo.size)
    if share < MIN_GARMENT_SHARE:
        raise NoGarmentError(f"no garment found in the garment photo (what was found covers {share:.1%} of it, "
                             f"at least {MIN_GARMENT_SHARE:.0%} is needed): {why}; send it cut out (a PNG with "
                             f"transparency), or filling the frame on a contrasting background")


def prepare_inputs(
    manifest: ModelManifest, person: DecodedImage, cloth: DecodedImage
) -> tuple[dict[str, F32], Placement]:
    """Build the per-item CHW tensors for every manifest input, and the person's placement.

    ``cloth_mask`` is the garment's alpha when it cuts the garment out (:func:`is_cutout`), else its
    silhouette in the photo
    (:func:`models.garment.silhouette`: the outline of what is not background, hole-filled, so light
    parts of the garment are garment too). Inputs a person stage provides are added later
    (``models.stages.to_tryon_canvas``).
    """
    tensors: dict[str, F32] = {}
    pspec = manifest.person_input
    placement = place(person.width, person.height, pspec.width, pspec.height, manifest.resize)
    tensors[pspec.name] = normalise(resize_to_canvas(person.rgb, placement, manifest.padding), pspec)
    cspec = manifest.input_for("cloth")
    mspec = manifest.input_for("cloth_mask")
    if cspec is not None:
        cpl = place(cloth.width, cloth.height, cspec.width, cspec.height, manifest.resize)
        cloth_rgb = resize_to_canvas(cloth.rgb, cpl)
        tensors[cspec.name] = normalise(cloth_rgb, cspec)
    if mspec is not None:
        mpl = place(cloth.width, cloth.height, mspec.width, mspec.height, manifest.resize)
        if is_cutout(cloth.alpha):
            assert cloth.alpha is not None
            found = resize_mask_to_canvas(cloth.alpha, mpl)
            _require_garment(found, mpl, "its transparency leaves almost nothing opaque")
            tensors[mspec.name] = normalise(found, mspec)
        elif cspec is not None and (cspec.height, cspec.width) == (mspec.height, mspec.width):
            found = (silhouette(cloth_rgb) * 255.0 + 0.5).astype(np.uint8)
            _require_garment(found, mpl, "nothing stands out from its background (a white garment on white, "
                                         "a black one on black, with no visible edge)")
            tensors[mspec.name] = normalise(found, mspec)
        else:
            tensors[mspec.name] = _constant_mask(mspec)
    return tensors, placement


def _constant_mask(spec: InputSpec) -> F32:
    """An all-opaque mask as a read-only broadcast view (no per-item allocation)."""
    one = normalise(np.full((1, 1), 255, dtype=np.uint8), spec)
    return np.broadcast_to(one, (spec.channels, spec.height, spec.width))


def to_uint8_image(chw: npt.NDArray[np.floating], value_range: tuple[float, float]) -> U8:
    """Model output CHW in ``value_range`` -> ``uint8`` HWC (or HW for one channel)."""
    lo, hi = value_range
    scaled = (np.asarray(chw, dtype=np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo)) + np.float32(0.5)
    u8 = np.clip(scaled, 0, 255).astype(np.uint8)
    if u8.shape[0] == 1:
        return u8[0]
    return np.ascontiguousarray(u8.transpose(1, 2, 0))


def render_result(
    person: DecodedImage,
    placement: Placement,
    result: npt.NDArray[np.floating],
    alpha: npt.NDArray[np.floating] | None,
    output: OutputSpec,
) -> Image.Image:
    """Bring the model output back to the person's original size and aspect.

    With an alpha output, only the region where alpha > 0 is upscaled and composited over the
    original full-resolution person, so pixels the model left alone stay exactly as they were and
    the cost scales with the garment's area, not the photo's. Without alpha, the whole result is
    upscaled.
    """
    pl = placement
    if alpha is None:
        crop = (pl.left, pl.top, pl.left + pl.width, pl.top + pl.height)
        rgb = Image.fromarray(to_uint8_image(result, output.value_range), "RGB")
        return rgb.resize((pl.src_w, pl.src_h), Image.Resampling.BILINEAR, box=crop)

    person_img = person.to_pil()
    a = to_uint8_image(alpha, (0.0, 1.0))[pl.top:pl.top + pl.height, pl.left:pl.left + pl.width]
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return person_img
    sx, sy = pl.src_w / pl.width, pl.src_h / pl.height
    # Source-pixel rectangle covering the non-zero alpha (plus bilinear reach), clamped to the photo.
    x0 = max(0, int(np.floor((cols[0] - 1) * sx)))
    x1 = min(pl.src_w, int(np.ceil((cols[-1] + 2) * sx)))
    y0 = max(0, int(np.floor((rows[0] - 1) * sy)))
    y1 = min(pl.src_h, int(np.ceil((rows[-1] + 2) * sy)))
    # Contract-space window (with margin) converted to uint8, and the exact float box inside it.
    cx0, cy0 = max(0, int(x0 / sx) - _MARGIN), max(0, int(y0 / sy) - _MARGIN)
    cx1 = min(pl.width, int(np.ceil(x1 / sx)) + _MARGIN)
    cy1 = min(pl.height, int(np.ceil(y1 / sy)) + _MARGIN)
    box = (x0 / sx - cx0, y0 / sy - cy0, x1 / sx - cx0, y1 / sy - cy0)
    window = (slice(None), slice(pl.top + cy0, pl.top + cy1), slice(pl.left + cx0, pl.left + cx1))
    rgb = Image.fromarray(to_uint8_image(result[window], output.value_range), "RGB")
    alpha_img = Image.fromarray(np.ascontiguousarray(a[cy0:cy1, cx0:cx1]), "L")
    region = (x1 - x0, y1 - y0)
    rgb_up = rgb.resize(region, Image.Resampling.BILINEAR, box=box)
    alpha_up = alpha_img.resize(region, Image.Resampling.BILINEAR, box=box)
    person_img.paste(rgb_up, (x0, y0), alpha_up)
    return person_img
