"""Multi-stage pipelines: a person stage in front of a try-on stage.

A person stage (manifest ``kind: person``) reads the person photo alone and provides what a try-on
stage may declare as inputs besides the photos: ``person_mask``, ``person_parse``,
``pose_keypoints`` (and always ``person_score``). Its outputs live on its own canvas (the photo
letterboxed to its input size); :func:`to_tryon_canvas` moves them onto the try-on stage's canvas
through the photo's own coordinates, so the two stages may use different sizes.

No onnxruntime here: pure numpy and Pillow, shared by the runner and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.contract import PERSON_ROLES, InputSpec, ModelContractError, ModelManifest
from models.pipeline import Placement

F32 = npt.NDArray[np.float32]


class NoPersonError(Exception):
    """The person stage found no person in the photo: permanent, a retry cannot change it."""

    error_type = "no_person"
    transient = False


@dataclass(frozen=True)
class PersonOutputs:
    """One photo's person-stage outputs on the person stage's canvas (CHW / K×3, as produced)."""

    score: float
    placement: Placement
    mask: F32 | None = None
    parse: F32 | None = None
    keypoints: F32 | None = None

    def mask_on_photo(self) -> F32:
        """The person mask at the photo's own size (H×W in [0, 1]); zeros without a mask."""
        pl = self.placement
        if self.mask is None:
            return np.zeros((pl.src_h, pl.src_w), dtype=np.float32)
        crop = self.mask[0, pl.top:pl.top + pl.height, pl.left:pl.left + pl.width]
        img = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), "F")
        return np.asarray(img.resize((pl.src_w, pl.src_h), Image.Resampling.BILINEAR), dtype=np.float32)

    def keypoints_on_photo(self) -> F32:
        """Keypoints as (x px, y px, visibility) in the photo's own pixels."""
        if self.keypoints is None:
            return np.zeros((0, 3), dtype=np.float32)
        pl = self.placement
        out = self.keypoints.astype(np.float32).copy()
        out[:, 0] = (out[:, 0] * pl.canvas_w - pl.left) * pl.src_w / pl.width
        out[:, 1] = (out[:, 1] * pl.canvas_h - pl.top) * pl.src_h / pl.height
        return out


def check_pipeline(person: ModelManifest | None, tryon: ModelManifest) -> None:
    """Refuse a pipeline whose try-on stage needs inputs no person stage provides (one-line error)."""
    if tryon.kind != "tryon":
        raise ModelContractError(f"the last stage must be a try-on model; {tryon.name} is a {tryon.kind} stage")
    needs = tryon.needs
    if person is None:
        if needs:
            roles = ", ".join(s.effective_role for s in needs)
            raise ModelContractError(
                f"model {tryon.name} needs {roles} from a person stage; put one in front, "
                f"e.g. person-mediapipe+{tryon.name}"
            )
        return
    if person.kind != "person":
        raise ModelContractError(f"stage {person.name} stands in front of {tryon.name} but is not a person stage "
                                 f"(kind {person.kind!r})")
    problems = []
    for spec in needs:
        role = spec.effective_role
        if role not in person.provides:
            problems.append(f"input {spec.name!r} ({role}) is not provided by {person.name} "
                            f"(it provides {', '.join(sorted(person.provides))})")
        elif role == "pose_keypoints" and spec.keypoints != person.keypoints:
            problems.append(f"input {spec.name!r} wants keypoint set {spec.keypoints!r}, "
                            f"{person.name} provides {person.keypoints!r}")
        elif role == "person_parse" and spec.channels != person.parse_classes:
            problems.append(f"input {spec.name!r} wants {spec.channels} parse classes, "
                            f"{person.name} provides {person.parse_classes}")
    if problems:
        raise ModelContractError(f"pipeline {person.name}+{tryon.name} does not fit: " + "; ".join(problems))


def _move_map(chw: F32, src: Placement, dst: Placement) -> F32:
    """Resample a C×H×W map from the ``src`` canvas onto the ``dst`` canvas (both placements of one photo)."""
    a = src.width / dst.width
    e = src.height / dst.height
    # Output pixel centre (x + 0.5) maps to source canvas position; Pillow's affine works on corners.
    coeffs = (a, 0.0, src.left - dst.left * a, 0.0, e, src.top - dst.top * e)
    out = np.empty((chw.shape[0], dst.canvas_h, dst.canvas_w), dtype=np.float32)
    for c in range(chw.shape[0]):
        img = Image.fromarray(np.ascontiguousarray(chw[c], dtype=np.float32), "F")
        moved = img.transform((dst.canvas_w, dst.canvas_h), Image.Transform.AFFINE, coeffs,
                              resample=Image.Resampling.BILINEAR, fillcolor=0.0)
        out[c] = np.asarray(moved, dtype=np.float32)
    inside = np.zeros((dst.canvas_h, dst.canvas_w), dtype=bool)
    inside[dst.top:dst.top + dst.height, dst.left:dst.left + dst.width] = True
    out[:, ~inside] = 0.0
    return out


def _move_points(points: F32, src: Placement, dst: Placement) -> F32:
    out = points.astype(np.float32).copy()
    out[:, 0] = (dst.left + (out[:, 0] * src.canvas_w - src.left) * dst.width / src.width) / dst.canvas_w
    out[:, 1] = (dst.top + (out[:, 1] * src.canvas_h - src.top) * dst.height / src.height) / dst.canvas_h
    return out


def to_tryon_canvas(outputs: PersonOutputs, needs: Sequence[InputSpec], dst: Placement) -> dict[str, F32]:
    """The try-on stage's person-stage inputs for one item, by input name, on its canvas ``dst``."""
    tensors: dict[str, F32] = {}
    for spec in needs:
        role = spec.effective_role
        if role not in PERSON_ROLES:
            continue
        if role == "pose_keypoints":
            assert outputs.keypoints is not None
            tensors[spec.name] = _move_points(outputs.keypoints, outputs.placement, dst)
        else:
            source = outputs.mask if role == "person_mask" else outputs.parse
            assert source is not None
            tensors[spec.name] = _move_map(source, outputs.placement, dst)
    return tensors


def from_crop(crop: PersonOutputs, box: tuple[int, int, int, int], full: Placement) -> PersonOutputs:
    """A crop's person-stage outputs moved onto the whole photo's person canvas ``full``.

    ``box`` (x0, y0, x1, y1, photo px) is where the crop was cut; the mask is zero outside it.
    Used when a second look at one figure of a photo finds the person to dress.
    """
    x0, y0, x1, y1 = box
    src = crop.placement
    # Whole-canvas position X -> photo px (X - full.left) * src_w / width -> crop px minus x0 -> crop canvas.
    ax = full.src_w / full.width * src.width / (x1 - x0)
    ay = full.src_h / full.height * src.height / (y1 - y0)
    bx = src.left - (full.left * full.src_w / full.width + x0) * src.width / (x1 - x0)
    by = src.top - (full.top * full.src_h / full.height + y0) * src.height / (y1 - y0)
    mask = None
    if crop.mask is not None:
        mask = np.empty((crop.mask.shape[0], full.canvas_h, full.canvas_w), dtype=np.float32)
        for c in range(crop.mask.shape[0]):
            img = Image.fromarray(np.ascontiguousarray(crop.mask[c], dtype=np.float32), "F")
            moved = img.transform((full.canvas_w, full.canvas_h), Image.Transform.AFFINE, (ax, 0.0, bx, 0.0, ay, by),
                                  resample=Image.Resampling.BILINEAR, fillcolor=0.0)
            mask[c] = np.asarray(moved, dtype=np.float32)
    keypoints = None
    if crop.keypoints is not None:
        keypoints = crop.keypoints.astype(np.float32).copy()
        px = (keypoints[:, 0] * src.canvas_w - src.left) * (x1 - x0) / src.width + x0
        py = (keypoints[:, 1] * src.canvas_h - src.top) * (y1 - y0) / src.height + y0
        keypoints[:, 0] = (full.left + px * full.width / full.src_w) / full.canvas_w
        keypoints[:, 1] = (full.top + py * full.height / full.src_h) / full.canvas_h
    return PersonOutputs(score=crop.score, placement=full, mask=mask, parse=None, keypoints=keypoints)
