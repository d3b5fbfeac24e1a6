"""Per-photo checks of a try-on result against the photo: where did the pixels change?

Regions come from the person stage's own view of the photo (its mask and keypoints, on the photo's
pixels), drawn more generously than the try-on graph's own torso band so the check does not
simply restate the graph:

* torso: the shoulder-hip quadrilateral, widened by half a shoulder width beyond each shoulder
  and by 0.4 × the larger of hip and shoulder width beyond each hip, raised by 0.4 shoulder widths
  and lowered by 0.3 torso lengths;
* face: the box of the face keypoints (nose, eyes, ears, mouth), widened by 30 % of its width on
  each side, from 0.6 widths above the eyes to 0.45 widths below the mouth (where the shoulders
  are nearer the mouth than that, a person leaning forward: to the shoulder line, and at least
  0.75 eye-to-mouth heights below the mouth, the chin);
* background: pixels farther than 3 % of the photo's longer side from the person mask;
* torso core: the shoulder-hip quadrilateral through the joints themselves, on the person mask
  (what "the torso is covered" is measured on; arms held in front of it rightly stay uncovered).

A pixel counts as changed when any channel differs by more than ``tolerance`` (JPEG noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from imaging.decode import decode_image
from models.runner import TryOnRunner

BoolMap = npt.NDArray[np.bool_]
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24
FACE_POINTS = range(11)
EYES = range(1, 7)
MOUTH = (9, 10)


@dataclass(frozen=True)
class PhotoFigures:
    """The measured shares for one (photo, garment) pair, each in [0, 1]."""

    changed: int
    torso_share: float  # of the changed pixels, the share inside the torso region
    face_unchanged: float  # of the face region's pixels, the share left unchanged
    background_unchanged: float  # of the background's pixels, the share left unchanged
    torso_covered: float = 0.0  # of the torso core's pixels, the share changed

    def line(self) -> str:
        """One human-readable line."""
        return (f"changed {self.changed:,} px; in torso {self.torso_share:.1%}; face unchanged "
                f"{self.face_unchanged:.1%}; background unchanged {self.background_unchanged:.1%}; "
                f"torso core covered {self.torso_covered:.1%}")


@dataclass(frozen=True)
class Regions:
    """Boolean maps at the photo's size."""

    torso: BoolMap
    face: BoolMap
    background: BoolMap
    core: BoolMap


def regions(mask: npt.NDArray[np.float32], keypoints: npt.NDArray[np.float32]) -> Regions:
    """Torso, face and background maps from a person mask (H×W) and keypoints (x px, y px, vis)."""
    h, w = mask.shape
    kp = keypoints[:, :2]
    ls, rs, lh, rh = kp[LEFT_SHOULDER], kp[RIGHT_SHOULDER], kp[LEFT_HIP], kp[RIGHT_HIP]
    sw = float(np.linalg.norm(ls - rs))
    hw = max(float(np.linalg.norm(lh - rh)), sw)
    s_mid, h_mid = (ls + rs) / 2, (lh + rh) / 2
    torso_len = max(float(np.linalg.norm(h_mid - s_mid)), sw * 0.5)
    across = (ls - rs) / max(sw, 1e-6)
    down = (h_mid - s_mid) / torso_len
    s_half, h_half = sw, 0.9 * hw  # from the centre line: 0.5 sw beyond each shoulder joint; 0.4 hw beyond each hip
    top = s_mid - down * 0.4 * sw
    bottom = h_mid + down * 0.3 * torso_len
    quad = [tuple(top + across * s_half), tuple(top - across * s_half),
            tuple(bottom - across * h_half), tuple(bottom + across * h_half)]
    torso_img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(torso_img).polygon([(float(x), float(y)) for x, y in quad], fill=255)

    face_pts = kp[list(FACE_POINTS)]
    fx0, fx1 = float(face_pts[:, 0].min()), float(face_pts[:, 0].max())
    fw = max(fx1 - fx0, 1.0)
    fy0 = float(kp[list(EYES), 1].min()) - 0.6 * fw
    mouth_y = float(kp[list(MOUTH), 1].max())
    eye_to_mouth = max(mouth_y - float(kp[list(EYES), 1].mean()), 1.0)
    # Shoulders at the chin (leaning forward): the face ends at the chin itself, not in the chest.
    fy1 = mouth_y + min(0.45 * fw, max(float(s_mid[1]) - mouth_y, 0.75 * eye_to_mouth))
    face_img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(face_img).rectangle((fx0 - 0.3 * fw, fy0, fx1 + 0.3 * fw, fy1), fill=255)

    core_img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(core_img).polygon([(float(x), float(y)) for x, y in (ls, rs, rh, lh)], fill=255)
    core = (np.asarray(core_img) > 0) & (mask > 0.5)

    grow = max(3, int(0.03 * max(h, w)) * 2 + 1)
    person = Image.fromarray(((mask > 0.5) * 255).astype(np.uint8), "L").filter(ImageFilter.MaxFilter(grow))
    return Regions(np.asarray(torso_img) > 0, np.asarray(face_img) > 0, np.asarray(person) == 0, core)


def changed_pixels(before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8], tolerance: int = 24) -> BoolMap:
    """Pixels where any channel moved by more than ``tolerance``."""
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=2)
    return np.asarray(diff > tolerance)


def measure(runner: TryOnRunner, person: bytes, cloth: bytes, tolerance: int = 24) -> PhotoFigures:
    """Run one try-on and measure it against the person stage's regions (raises its error, e.g. no person)."""
    result = runner.run_one(person, cloth)
    view = runner.analyse_person(person)
    before = decode_image(person).rgb
    after = decode_image(result.image).rgb
    reg = regions(view.mask_on_photo(), view.keypoints_on_photo())
    changed = changed_pixels(before, after, tolerance)
    n = int(changed.sum())
    return PhotoFigures(
        changed=n,
        torso_share=float((changed & reg.torso).sum() / n) if n else 1.0,
        face_unchanged=float((~changed & reg.face).sum() / max(1, reg.face.sum())),
        background_unchanged=float((~changed & reg.background).sum() / max(1, reg.background.sum())),
        torso_covered=float((changed & reg.core).sum() / max(1, reg.core.sum())),
    )
