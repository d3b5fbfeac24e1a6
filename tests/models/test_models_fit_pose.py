"""Issue 21: ``tryon-fit`` 1.2.0 runs sleeves along the upper arms and follows the hip line.

The graph is run alone (built from code, as shipped) on a drawn canvas: a flat person mask, a
tee with short sleeves (``modelkit.garments.tee_outline``) and hand-placed BlazePose keypoints of
an upright person with the upper arms held out from the body, so the sleeves' place lies outside
the torso band.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from PIL import Image, ImageDraw

from modelkit.build import build_fit_model, model_bytes
from modelkit.garments import tee_outline

H, W = 512, 384


@pytest.fixture(scope="module")
def session() -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model_bytes(build_fit_model()), providers=["CPUExecutionProvider"])


def keypoints(*, left_hip_y: float = 300.0, right_hip_y: float = 300.0) -> np.ndarray:
    """33 keypoints (x, y in [0, 1], visibility 1) of an upright person facing the camera."""
    px = {0: (192, 100), 1: (187, 93), 2: (185, 92), 3: (183, 92), 4: (197, 93), 5: (199, 92), 6: (201, 92),
          7: (176, 96), 8: (208, 96), 9: (188, 112), 10: (196, 112),
          11: (234, 150), 12: (150, 150), 13: (320, 180), 14: (64, 180), 15: (340, 250), 16: (44, 250),
          17: (344, 262), 18: (40, 262), 19: (346, 266), 20: (38, 266), 21: (342, 262), 22: (42, 262),
          23: (220, left_hip_y), 24: (164, right_hip_y), 25: (218, 400), 26: (166, 400),
          27: (218, 480), 28: (166, 480), 29: (218, 490), 30: (166, 490), 31: (222, 500), 32: (162, 500)}
    kp = np.ones((1, 33, 3), np.float32)
    for i, (x, y) in px.items():
        kp[0, i, :2] = (x / W, y / H)
    return kp


def run(session: onnxruntime.InferenceSession, kp: np.ndarray, *, sleeves: bool = True) -> np.ndarray:
    """The graph's alpha (H×W) for a red tee letterboxed onto the canvas (0.75 scale, 64 px down)."""
    mask_img = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask_img).polygon([(x * 0.75, y * 0.75 + 64) for x, y in tee_outline()], fill=255)
    mask = np.asarray(mask_img, np.float32)[None, None] / 255
    if not sleeves:  # the body only: nothing beyond the hem's columns
        mask[..., :int(142 * 0.75) + 1] = 0
        mask[..., int(370 * 0.75):] = 0
    cloth = np.zeros((1, 3, H, W), np.float32)
    cloth[:, 0] = 0.8
    feeds = {"person": np.full((1, 3, H, W), 0.5, np.float32), "cloth": cloth, "cloth_mask": mask,
             "person_mask": np.ones((1, 1, H, W), np.float32), "pose_keypoints": kp}
    _, alpha = session.run(["result", "alpha"], feeds)
    return np.asarray(alpha[0, 0])


def on_upper_arm(alpha: np.ndarray, shoulder: tuple[float, float], elbow: tuple[float, float]) -> float:
    """Mean alpha in a small disc 45 % of the way from the shoulder to the elbow."""
    x = shoulder[0] + 0.45 * (elbow[0] - shoulder[0])
    y = shoulder[1] + 0.45 * (elbow[1] - shoulder[1])
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 16
    return float(alpha[disc].mean())


def test_sleeves_run_along_the_upper_arms(session: onnxruntime.InferenceSession) -> None:
    alpha = run(session, keypoints())
    for shoulder, elbow in (((234, 150), (320, 180)), ((150, 150), (64, 180))):
        assert on_upper_arm(alpha, shoulder, elbow) > 0.9, (shoulder, elbow)
    # Forearms stay in front: no sleeve past the elbow on a short-sleeved tee.
    assert on_upper_arm(alpha, (320, 180), (340, 250)) < 0.05


def test_a_sleeveless_garment_adds_nothing_on_the_arms(session: onnxruntime.InferenceSession) -> None:
    alpha = run(session, keypoints(), sleeves=False)
    for shoulder, elbow in (((234, 150), (320, 180)), ((150, 150), (64, 180))):
        assert on_upper_arm(alpha, shoulder, elbow) < 0.05, (shoulder, elbow)
    assert alpha[250, 192] > 0.99, "the body is dressed"


def test_the_hem_follows_the_hip_line(session: onnxruntime.InferenceSession) -> None:
    def hem_row(alpha: np.ndarray, x: int) -> int:
        return int(np.flatnonzero(alpha[:, x] > 0.5).max())

    level = run(session, keypoints())
    tilted = run(session, keypoints(left_hip_y=320.0, right_hip_y=280.0))  # the person's left hip lower
    # Level hips: a level hem. Tilted: lower on the left hip's side (image right), higher on the other.
    assert abs(hem_row(level, 210) - hem_row(level, 174)) <= 1
    assert hem_row(tilted, 210) - hem_row(tilted, 174) >= 10, (hem_row(tilted, 210), hem_row(tilted, 174))


def leaning_keypoints() -> np.ndarray:
    """A person leaning forward over a table: a big face, the shoulders just below the mouth."""
    kp = keypoints()
    face = {0: (192, 100), 1: (180, 89), 2: (177, 88), 3: (174, 88), 4: (204, 89), 5: (207, 88), 6: (210, 88),
            7: (162, 94), 8: (222, 94), 9: (184, 112), 10: (200, 112), 11: (234, 118), 12: (150, 118)}
    for i, (x, y) in face.items():
        kp[0, i, :2] = (x / W, y / H)
    return kp


def test_a_leaning_persons_chest_under_the_chin_is_dressed_and_the_face_kept(
        session: onnxruntime.InferenceSession) -> None:
    # Regression (tryon-fit 1.2.0): the face box reached 0.6 face widths below the mouth whatever the
    # pose, so a man leaning over a card table, shoulders at his chin, kept his upper chest uncovered.
    alpha = run(session, leaning_keypoints())
    chest = alpha[138:146, 176:209]
    assert chest.mean() > 0.9, chest.mean()
    face = alpha[80:122, 162:223]  # forehead to chin (mouth 112, eyes to mouth 22 px), ear to ear
    assert face.max() < 0.01, face.max()
