"""Who gets dressed: refusals the person stage's view supports, and the chosen person's record.

After the person stage, before the try-on stage, each photo passes two permanent gates:

* ``no_torso``: the shoulders are not in the photo, not on the person, or the face fills so much of
  the frame that there is no torso to dress (a face close-up: wider than ``MAX_FACE_SHARE`` of the
  photo, or a big face with BlazePose's guessed shoulders narrow or at the mouth) — refused rather
  than pasting a garment over mouth and chin; or the keypoints make no upright torso (a shoulder
  above the mouth: two people overlapping whose keypoints mixed, a person lying down);
* ``multiple_people``: the person mask holds other people besides the one the keypoints belong to,
  and that one does not clearly dominate (by mask area, at least ``DOMINANCE`` × the largest other
  figure) or stands off-centre. When one does dominate, it is dressed and :class:`Subject` records
  who (box, share of the mask, how many other figures).

Everything is measured on the photo's own pixels from the person stage's mask and keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.stages import NoPersonError, PersonOutputs, from_crop

F32 = npt.NDArray[np.float32]

LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_EAR, RIGHT_EAR = 7, 8
ARM_POINTS = (13, 14, 15, 16, 17, 18, 19, 20, 21, 22)
FACE_POINTS = tuple(range(11))
EYES = tuple(range(1, 7))
MOUTH = (9, 10)
MIN_SHOULDER_VISIBILITY = 0.5
MAX_FACE_SHARE = 0.42  # face keypoints' width / photo width above which it is a close-up
MIN_SHOULDER_TO_FACE = 1.5  # shoulder width / face width below which the "shoulders" may be a chin
# BlazePose on a face close-up shrinks the face (its face keypoints may span a quarter of a face that
# fills the frame) and guesses shoulders at the chin: narrow (under MIN_SHOULDER_TO_FACE faces) or
# at the mouth (less than MIN_NECK × the eye-to-mouth height below it). Either is a close-up only
# with a big face: eye-to-mouth over BIG_FACE of the photo's height (a person turned three-quarters
# also has shoulders 1.3 faces wide, and one leaning forward a short neck, with faces under 0.07).
MIN_NECK = 0.5
BIG_FACE = 0.09
# The keypoints of two people overlapping (one behind the other) may mix: the face of one, a
# shoulder of the other beside it. An upright person's shoulders are below the mouth (a person
# leaning over a table: 0.1 eye-to-mouth heights; a side view with the head turned: 0.0).
MAX_SHOULDER_ABOVE_MOUTH = 0.25
BODY_MARGIN = 0.6  # the chosen person's columns: keypoints ± this × shoulder width
FIGURE_SHARE = 0.25  # other mask mass below this share of the chosen person's is no figure
DOMINANCE = 2.0  # the chosen person's mask area / the largest other figure's, to dress one of many
CENTRE_BAND = 0.8  # the dominant person's centre lies in the middle 80 % of the width
MIN_STRIP_ASPECT = 0.55  # a mask box this wide for its height may be people side by side (strips)
# A person found beside the chosen one whose shoulders are at least this share of the chosen one's
# is not clearly smaller (twice the area is about 1.4 times the width): several people.
COMPARABLE_NEIGHBOUR = 0.6
NEIGHBOUR_REACH = 0.5  # a neighbour's crop reaches this share of the person's box into it


class NoTorsoError(Exception):
    """The photo shows no torso to dress (a face close-up, shoulders out of frame): permanent."""

    error_type = "no_torso"
    transient = False


class MultiplePeopleError(Exception):
    """Several people and none clearly the subject: permanent (crop the photo to one person)."""

    error_type = "multiple_people"
    transient = False


@dataclass(frozen=True)
class Subject:
    """The dressed person: box in photo pixels (x0, y0, x1, y1), and what else the photo held."""

    box: tuple[int, int, int, int]
    mask_share: float  # the dressed person's share of the whole person mask
    other_figures: int  # other people (mask regions of a figure's size) left undressed

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly record for the result's metadata."""
        return {"box": list(self.box), "mask_share": round(self.mask_share, 3), "other_figures": self.other_figures}


def _figures(other: npt.NDArray[np.bool_], min_mass: float) -> list[float]:
    """Masses of the column runs of ``other`` (a figure stands in a run of occupied columns)."""
    cols = other.sum(axis=0).astype(np.float64)
    occupied = cols > 0.05 * other.shape[0]
    masses: list[float] = []
    run = 0.0
    for on, mass in zip(occupied, cols, strict=True):
        if on:
            run += mass
        elif run:
            masses.append(run)
            run = 0.0
    if run:
        masses.append(run)
    return [m for m in masses if m >= min_mass]


def choose_subject(view: PersonOutputs, *, side_by_side: bool = True) -> Subject:
    """The person to dress, or the refusal (``NoTorsoError``, ``MultiplePeopleError``).

    ``side_by_side``: also refuse when the mask splits into figures side by side
    (:func:`figures_apart`) and the person's own is not clearly the largest (off for a view that
    :func:`choose_among_figures` already judged).

    Measured on the person stage's own canvas (the photo's part of it), so the cost does not grow
    with the photo; the box is given in the photo's pixels.
    """
    pl = view.placement
    if view.mask is None or view.keypoints is None:
        return Subject(box=(0, 0, pl.src_w, pl.src_h), mask_share=1.0, other_figures=0)
    mask = view.mask[0, pl.top:pl.top + pl.height, pl.left:pl.left + pl.width] > 0.5
    kp = view.keypoints.astype(np.float32).copy()
    kp[:, 0] = kp[:, 0] * pl.canvas_w - pl.left
    kp[:, 1] = kp[:, 1] * pl.canvas_h - pl.top
    h, w = mask.shape
    ls, rs = kp[LEFT_SHOULDER], kp[RIGHT_SHOULDER]
    face = kp[list(FACE_POINTS)]
    face_w = max(float(face[:, 0].max() - face[:, 0].min()), 1.0)
    shoulder_w = float(np.hypot(*(ls[:2] - rs[:2])))

    reach = max(2, int(0.3 * shoulder_w))

    def on_mask(x: float, y: float) -> bool:
        xi, yi = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
        return bool(mask[max(0, yi - reach):yi + reach + 1, max(0, xi - reach):xi + reach + 1].any())

    # A shoulder may be cut off at the side by a little; one below the photo's bottom is no torso.
    side = 0.3 * shoulder_w
    inside = all(-side <= p[0] < w + side and 0 <= p[1] < h for p in (ls, rs))
    if not inside or min(ls[2], rs[2]) < MIN_SHOULDER_VISIBILITY or not (on_mask(*ls[:2]) and on_mask(*rs[:2])):
        raise NoTorsoError("no torso to dress: the shoulders are not in the photo")
    eyes_y, mouth_y = float(kp[list(EYES), 1].mean()), float(kp[list(MOUTH), 1].mean())
    eye_to_mouth = max(mouth_y - eyes_y, 1.0)
    neck = ((float(ls[1]) + float(rs[1])) / 2 - mouth_y) / eye_to_mouth
    big_face = eye_to_mouth > BIG_FACE * h
    if face_w > MAX_FACE_SHARE * w or (big_face and shoulder_w < MIN_SHOULDER_TO_FACE * face_w):
        raise NoTorsoError(f"no torso to dress: a face close-up (face {face_w / w:.0%} of the width, "
                           f"shoulders {shoulder_w / face_w:.1f}× the face)")
    if big_face and neck < MIN_NECK:
        raise NoTorsoError(f"no torso to dress: a face close-up (the shoulders found at the mouth, "
                           f"{neck:.1f}× the eye-to-mouth height below it; eyes to mouth {eye_to_mouth / h:.0%} "
                           f"of the height)")

    xs = [float(p[0]) for i, p in enumerate(kp) if i in (LEFT_SHOULDER, RIGHT_SHOULDER, *FACE_POINTS)
          or (i in ARM_POINTS and p[2] > MIN_SHOULDER_VISIBILITY)]
    x0 = max(0, int(min(xs) - BODY_MARGIN * shoulder_w))
    x1 = min(w, int(np.ceil(max(xs) + BODY_MARGIN * shoulder_w)))
    y0 = max(0, int(float(face[:, 1].min()) - 1.5 * face_w))
    body = np.zeros_like(mask)
    body[y0:, x0:x1] = True
    sx, sy = pl.src_w / pl.width, pl.src_h / pl.height
    mine = float((mask & body).sum())
    total = float(mask.sum())
    others = _figures(mask & ~body, FIGURE_SHARE * mine)
    ys = np.flatnonzero((mask & body).any(axis=1))
    y1 = int(ys[-1]) + 1 if ys.size else h
    box = (int(x0 * sx), int(y0 * sy), min(pl.src_w, round(x1 * sx)), min(pl.src_h, round(y1 * sy)))
    centre = (float(ls[0]) + float(rs[0])) / 2
    if others:
        central = abs(centre - w / 2) <= CENTRE_BAND * w / 2
        if max(others) * DOMINANCE > mine or not central:
            raise MultiplePeopleError(
                f"{len(others) + 1} people in the photo and none clearly the subject (the largest other "
                f"figure is {max(others) / max(mine, 1.0):.0%} of the one found); crop the photo to one person")
    # The body's columns above are generous (arms, a coat): a neighbour standing close lends them
    # mass. Where the mask splits into figures side by side, the person's own figure must dominate too.
    apart = figures_apart(view) if side_by_side else []
    if apart:
        cx = centre * sx
        own = next((i for i, f in enumerate(apart) if f.box[0] <= cx <= f.box[2]), None)
        if own != 0 or not dominant_figure(apart, cx, pl.src_w):
            raise MultiplePeopleError(
                f"{len(apart)} people side by side and none clearly the subject (the next figure is "
                f"{apart[1].mass / apart[0].mass:.0%} of the largest); crop the photo to one person")
        others = others or [f.mass for f in apart[1:]]
    # After the people count: mixed keypoints of people side by side are refused as multiple_people.
    shoulder_above = (mouth_y - min(float(ls[1]), float(rs[1]))) / eye_to_mouth
    if shoulder_above > MAX_SHOULDER_ABOVE_MOUTH:
        raise NoTorsoError(f"no upright torso to dress: a shoulder found {shoulder_above:.1f}× the eye-to-mouth "
                           f"height above the mouth (two people overlapping, or a person lying down); "
                           f"crop the photo to one upright person")
    return Subject(box=box, mask_share=mine / max(total, 1.0), other_figures=len(others))


@dataclass(frozen=True)
class Figure:
    """One figure of the person mask: its box (photo px) and its mask mass (person-canvas px)."""

    box: tuple[int, int, int, int]
    mass: float


def figures_apart(view: PersonOutputs, limit: int = 3) -> list[Figure]:
    """The separate figures in the person mask (largest first), when it holds two or more.

    For a photo the person stage scored below its threshold: its pose crop spans the mask's whole
    bounding box, so two people side by side make one crop that holds no single person. Each
    figure is a run of occupied columns (as in :func:`choose_subject`) with a mass at least
    ``FIGURE_SHARE`` of the largest, its box widened by a fifth; fewer than two such runs gives ``[]``.
    """
    pl = view.placement
    if view.mask is None:
        return []
    mask = view.mask[0, pl.top:pl.top + pl.height, pl.left:pl.left + pl.width] > 0.5
    h = mask.shape[0]
    cols = mask.sum(axis=0).astype(np.float64)
    occupied = np.concatenate([[False], cols > 0.05 * h, [False]])
    edges = np.flatnonzero(occupied[1:] != occupied[:-1])
    runs = [(int(a), int(b), float(cols[a:b].sum())) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    if not runs:
        return []
    largest = max(m for _, _, m in runs)
    runs = sorted((r for r in runs if r[2] >= FIGURE_SHARE * largest), key=lambda r: -r[2])[:limit]
    if len(runs) < 2:
        return []
    sx, sy = pl.src_w / pl.width, pl.src_h / pl.height
    found = []
    for a, b, mass in runs:
        ys = np.flatnonzero(mask[:, a:b].any(axis=1))
        pad_x, pad_y = 0.2 * (b - a), 0.2 * (ys[-1] + 1 - ys[0])
        box = (max(0, int((a - pad_x) * sx)), max(0, int((ys[0] - pad_y) * sy)),
               min(pl.src_w, int(np.ceil((b + pad_x) * sx))), min(pl.src_h, int(np.ceil((ys[-1] + 1 + pad_y) * sy))))
        found.append(Figure(box, mass))
    return found


def neighbour_boxes(view: PersonOutputs, subject: Subject) -> list[tuple[int, int, int, int]]:
    """Crops (photo px, full height) of the person mask beside the chosen person's box, one per
    side with mask at least a tenth of the photo wide, each reaching ``NEIGHBOUR_REACH`` of the
    person's box into it: where a neighbour sitting close, whose figure the person's generous
    columns partly took in, would stand."""
    pl = view.placement
    if view.mask is None:
        return []
    # Measured on the person stage's canvas (as choose_subject), so the cost does not grow with the photo.
    canvas = view.mask[0, pl.top:pl.top + pl.height, pl.left:pl.left + pl.width] > 0.5
    occupied: npt.NDArray[np.bool_] = np.asarray(canvas.any(axis=0))
    sx = pl.src_w / pl.width
    x0, x1 = int(subject.box[0] / sx), int(np.ceil(subject.box[2] / sx))
    reach = NEIGHBOUR_REACH * (subject.box[2] - subject.box[0])
    boxes = []
    for a, b, toward_right in ((0, x0, True), (x1, pl.width, False)):
        cols = np.flatnonzero(occupied[a:b])
        if b - a < 0.1 * pl.width or cols.size == 0:
            continue
        ca, cb = (a + int(cols[0])) * sx, (a + int(cols[-1]) + 1) * sx
        left, right = (ca, cb + reach) if toward_right else (ca - reach, cb)
        boxes.append((max(0, int(left)), 0, min(pl.src_w, int(np.ceil(right))), pl.src_h))
    return boxes


def comparable_neighbour(view: PersonOutputs, neighbours: Sequence[PersonOutputs], min_score: float) -> float:
    """The largest shoulder width of a person found in ``neighbours`` (crops' views) as a share of
    the chosen person's in ``view`` (0.0 when none is a person)."""
    def shoulders(v: PersonOutputs) -> float:
        kp = v.keypoints_on_photo()
        return float(np.hypot(*(kp[LEFT_SHOULDER, :2] - kp[RIGHT_SHOULDER, :2]))) if len(kp) else 0.0

    def nose_x(v: PersonOutputs) -> float:
        kp = v.keypoints_on_photo()
        return float(kp[0, 0]) if len(kp) else float("nan")

    own = max(shoulders(view), 1.0)
    # A crop reaching into the person's box may find the person again: only another face counts.
    others = [v for v in neighbours if v.score >= min_score and abs(nose_x(v) - nose_x(view)) >= 0.5 * own]
    return max((shoulders(v) / own for v in others), default=0.0)


def mask_strips(view: PersonOutputs) -> list[tuple[int, int, int, int]]:
    """Boxes (photo px) of side-by-side strips of the person mask's bounding box, each widened by a
    sixth of its width: two when the box is at least ``MIN_STRIP_ASPECT`` as wide as it is high (two
    people close; one standing person is about 0.3-0.5 as wide as high), three when it is wider than
    high; else ``[]``."""
    pl = view.placement
    if view.mask is None:
        return []
    mask = view.mask[0, pl.top:pl.top + pl.height, pl.left:pl.left + pl.width] > 0.5
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return []
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    if x1 - x0 < MIN_STRIP_ASPECT * (y1 - y0):
        return []
    strips = 3 if x1 - x0 >= y1 - y0 else 2
    sx, sy = pl.src_w / pl.width, pl.src_h / pl.height
    width = (x1 - x0) / strips
    boxes = []
    for i in range(strips):
        a, b = x0 + i * width - width / 6, x0 + (i + 1) * width + width / 6
        boxes.append((max(0, int(a * sx)), max(0, int(y0 * sy)), min(pl.src_w, int(np.ceil(b * sx))),
                      min(pl.src_h, int(np.ceil(y1 * sy)))))
    return boxes


def figure_boxes(view: PersonOutputs, limit: int = 3) -> list[tuple[int, int, int, int]]:
    """Boxes (photo px, largest first) of :func:`figures_apart`."""
    return [f.box for f in figures_apart(view, limit)]


def dominant_figure(figures: Sequence[Figure], centre_x: float, photo_w: int) -> bool:
    """Whether the first (largest) of ``figures`` clearly dominates: the first path's rule.

    At least ``DOMINANCE`` × the mass of the next largest, and its shoulders' centre (``centre_x``,
    photo px) inside the middle ``CENTRE_BAND`` of the photo's width.
    """
    if not figures:
        return False
    rest = max((f.mass for f in figures[1:]), default=0.0)
    central = abs(centre_x - photo_w / 2) <= CENTRE_BAND * photo_w / 2
    return rest * DOMINANCE <= figures[0].mass and central


def choose_among_figures(whole: PersonOutputs, figures: Sequence[Figure], views: Sequence[PersonOutputs],
                         min_score: float) -> tuple[Subject, PersonOutputs]:
    """The second look's verdict: who to dress among ``figures`` (each with its crop's ``views``).

    When the largest figure's crop holds a person (score at least ``min_score``) who clearly
    dominates (:func:`dominant_figure`, the first path's rule), that person is dressed: returns the
    subject and the crop's view moved onto the whole photo (:func:`models.stages.from_crop`).
    Otherwise raises ``MultiplePeopleError`` when any crop holds a person (two figures or more and
    none to dress: the largest is not a person the stage is sure of, say a man seen from behind, or
    does not dominate), ``NoPersonError`` when none does (and ``NoTorsoError`` for a dominant person
    with no torso to dress).
    """
    people = [v.score for v in views if v.score >= min_score]
    if figures and views and views[0].score >= min_score and views[0].keypoints is not None:
        first = from_crop(views[0], figures[0].box, whole.placement)
        kp = first.keypoints_on_photo()
        centre = (float(kp[LEFT_SHOULDER, 0]) + float(kp[RIGHT_SHOULDER, 0])) / 2
        if dominant_figure(figures, centre, whole.placement.src_w):
            subject = choose_subject(first, side_by_side=False)
            total = sum(f.mass for f in figures)
            return replace(subject, mask_share=figures[0].mass / total, other_figures=len(figures) - 1), first
    if people and len(figures) >= 2:
        raise MultiplePeopleError(
            f"{len(figures)} figures in the photo and none clearly the subject (the person stage finds "
            f"people in them alone: scores {', '.join(f'{v.score:.2f}' for v in views)}, but not one in the "
            f"whole photo, score {whole.score:.2f}); crop the photo to one person")
    raise NoPersonError(f"no person found in the photo (person score {whole.score:.2f} < {min_score:.2f})")
