"""The ``tryon-fit`` graph: a try-on stage that places the garment from a person stage's mask and keypoints.

Inputs (one canvas, ``height`` × ``width``, letterboxed): ``person``, ``cloth``, ``cloth_mask``
(as for ``tryon-geometric``), ``person_mask`` (N×1×H×W in [0, 1]) and ``pose_keypoints``
(N×33×3, BlazePose order, x and y in [0, 1] of the canvas, visibility in [0, 1]). Outputs
``result`` and ``alpha``; the runner composites the garment over the full-resolution photo.

What the graph does (all deterministic arithmetic, no learned weights):

1. torso frame from the keypoints: shoulder centre and width, hip centre, and the body's centre
   line from the shoulders to the hips (it may lean), in a frame rotated by the shoulders' slope
   (up to ``max_tilt``) so the garment and its band follow a tilted torso; hip keypoints outside
   the photo still count (the model extrapolates them), so a half-body photo is dressed down to
   its bottom edge; the body's width from the person mask around the centre line (a turned person
   or a wide coat is wider than the shoulder joints);
2. garment mask (``cloth_mask``: its alpha, or the silhouette the runner found in pre-processing),
   its extent and hem width;
3. a sampling grid: the garment's hem width becomes ``hem_to_shoulder`` × the shoulder width (or
   the body's measured width, up to ``max_widen`` times that), its
   top the shoulder line (raised by ``collar_lift`` × shoulder width), its bottom the hips
   (lowered by ``hem_drop`` × torso length), its centre the body's centre line; the warp follows
   both torso lines: the garment's rows run from the shoulder line (level in the frame) to the hip
   line at its own slope (within ``max_tilt``), and its width goes from the shoulders' to the hips'
   (``hip_follow`` of the hips' measured ratio, within ±``hem_range``);
4. alpha = warped garment mask × the torso region (a band around the shoulder-to-hip line) × the
   person mask (as found, not grown: what the segmenter leaves out — a table, a held object —
   stays in front), minus protected parts: the head (a disc around the face keypoints and a box
   from the forehead to below the chin; below the shoulder line only to the chin itself,
   ``chin_eyes`` eye-to-mouth heights below the mouth), the forearms, the hands and the lower half of the upper
   arms (capsules around the visible arm keypoints), and skin-coloured pixels near a hand (the
   face's own colour, by chromaticity; off for a greyscale photo), so arms, hands and fingers in
   front of the body stay in front, and skin above the shoulder line (neck, chin, a neighbour's
   face); then the sleeves: around each shoulder joint (where the torso warp takes it) the garment
   is turned so that its own sleeve (its mask beyond the hem's width, above ``armpit``) points down
   the visible upper arm, within ``sleeve_radius`` arm radii of the shoulder-to-elbow segment, on
   the person, never over the head, a forearm or a hand; the torso's garment wins where both
   reach; feathered 5×5;
5. the garment stays opaque but carries the photo's shading: the covered clothing's luminance,
   blurred and divided by its mean over the covered area (so a black suit does not turn a white
   tee grey), moves the garment's brightness by at most ``shade_min``–``shade_max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from modelkit.build import GraphBuilder

KEYPOINTS = 33
NOSE, LEFT_EAR, RIGHT_EAR = 0, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 13, 14, 15, 16
LEFT_INDEX, RIGHT_INDEX = 19, 20
LEFT_HIP, RIGHT_HIP = 23, 24
FACE_POINTS = tuple(range(11))


@dataclass(frozen=True)
class FitParams:
    """Proportions of the keypoint-driven placement (fractions of shoulder width or torso length)."""

    hem_to_shoulder: float = 1.2  # garment hem width / shoulder width (joint centres)
    collar_lift: float = 0.2  # garment top above the shoulder line, × shoulder width
    hem_drop: float = 0.12  # garment bottom below the hips, × torso length
    max_stretch: float = 1.35  # vertical / horizontal scale kept within [1/x, x]
    torso_half_width: float = 0.8  # half-width of the torso band at the shoulders, × shoulder width
    hip_half_width: float = 0.75  # at the hips, × max(hip width, shoulder width)
    head_radius: float = 0.55  # head disc radius, × max(ear distance, 0.6 × shoulder width)
    face_margin: float = 0.4  # face box: beyond the face keypoints on each side, × their width
    forehead: float = 0.8  # face box: above the eyes, × face width
    chin: float = 0.6  # face box: below the mouth, × face width
    chin_eyes: float = 0.85  # ... but below the shoulder line at most this × the eye-to-mouth height
    arm_radius: float = 0.14  # arm capsule radius, × shoulder width
    visible: float = 0.5  # keypoint visibility above which an arm is protected
    skin_reach: float = 0.45  # skin-coloured pixels within this × shoulder width of a hand's centre stay in front
    skin_chroma: float = 0.035  # chromaticity distance from the face's colour that counts as skin
    shading: float = 0.5  # share of the photo's relative shading carried onto the garment
    shade_min: float = 0.72  # the garment is darkened to at most this factor ...
    shade_max: float = 1.12  # ... and lightened to at most this one
    max_tilt: float = 0.35  # sine of the largest shoulder slope the garment follows (about 20°)
    body_window: float = 1.0  # mask width measured within this × max(shoulder width, 0.45 torso) of the centre
    max_widen: float = 1.5  # the garment and band widen to the body's mask at most this much
    sleeve_radius: float = 1.4  # sleeve half-width around the upper arm, × arm_radius
    sleeve_mass: float = 0.02  # a side's sleeve counts when its mass beyond the hem is this share of the garment
    armpit: float = 0.45  # the garment's sleeves lie above this share of its height
    hip_ratio: float = 0.7  # hip joints / shoulder joints of an upright body seen from the front
    hip_follow: float = 0.5  # the hem's width follows the hips' measured ratio by this share ...
    hem_range: float = 0.15  # ... within ±this of the shoulders' width


def _point(g: GraphBuilder, kps: str, index: int, height: int, width: int) -> tuple[str, str, str]:
    """(x px, y px, visibility) of one keypoint, each [N,1,1,1]."""
    row = g.op("Slice", kps, g.i64(index), g.i64(index + 1), g.i64(1))  # [N,1,3]
    parts = []
    for channel, scale in ((0, float(width)), (1, float(height)), (2, 1.0)):
        value = g.op("Reshape", g.op("Slice", row, g.i64(channel), g.i64(channel + 1), g.i64(2)), g.i64(-1, 1, 1, 1))
        parts.append(g.mul(value, scale) if scale != 1.0 else str(value))
    return parts[0], parts[1], parts[2]


def _dist(g: GraphBuilder, ax: str, ay: str, bx: str, by: str) -> str:
    dx, dy = g.sub(ax, bx), g.sub(ay, by)
    return str(g.op("Sqrt", g.add(g.mul(dx, dx), g.mul(dy, dy))))


def _capsule(g: GraphBuilder, cols: str, rows: str, a: tuple[str, str], b: tuple[str, str], radius: str) -> str:
    """1.0 within ``radius`` of the segment a-b (soft 1 px edge), [N,1,H,W]."""
    ax, ay = a
    bx, by = b
    vx, vy = g.sub(bx, ax), g.sub(by, ay)
    length2 = g.op("Max", g.add(g.mul(vx, vx), g.mul(vy, vy)), g.const(1e-6))
    px, py = g.sub(cols, ax), g.sub(rows, ay)
    t = g.op("Clip", g.div(g.add(g.mul(px, vx), g.mul(py, vy)), length2), g.const(0.0), g.const(1.0))
    d = _dist(g, px, py, g.mul(t, vx), g.mul(t, vy))
    return str(g.op("Clip", g.sub(radius, d), g.const(0.0), g.const(1.0)))


def build_fit_graph(height: int, width: int, params: FitParams | None = None) -> onnx.GraphProto:
    """The keypoint-driven try-on graph for a canvas of ``height`` × ``width``."""
    from onnx import TensorProto, helper

    p = params or FitParams()
    g = GraphBuilder()
    person, cloth, cloth_mask, person_mask, kps = "person", "cloth", "cloth_mask", "person_mask", "pose_keypoints"
    rows = g.const(np.arange(height, dtype=np.float32).reshape(1, 1, height, 1) + 0.5, hint="rows")
    cols = g.const(np.arange(width, dtype=np.float32).reshape(1, 1, 1, width) + 0.5, hint="cols")

    def pt(i: int) -> tuple[str, str, str]:
        return _point(g, kps, i, height, width)

    # 1. Torso frame.
    lsx, lsy, _ = pt(LEFT_SHOULDER)
    rsx, rsy, _ = pt(RIGHT_SHOULDER)
    lhx, lhy, _ = pt(LEFT_HIP)
    rhx, rhy, _ = pt(RIGHT_HIP)
    sx, sy = g.div(g.add(lsx, rsx), 2.0), g.div(g.add(lsy, rsy), 2.0)
    hx, hy = g.div(g.add(lhx, rhx), 2.0), g.div(g.add(lhy, rhy), 2.0)
    shoulder_w = g.op("Max", _dist(g, lsx, lsy, rsx, rsy), g.const(4.0))
    hip_w = _dist(g, lhx, lhy, rhx, rhy)
    # The torso's own frame: rotated by the shoulder slope (within max_tilt), whichever way the
    # person faces. cc/rr are each pixel's coordinates in that frame, origin at the shoulder centre.
    facing = g.sub(g.mul(g.fcmp("GreaterOrEqual", g.sub(lsx, rsx), 0.0), 2.0), 1.0)
    tilt = g.op("Clip", g.div(g.mul(g.sub(lsy, rsy), facing), shoulder_w), g.const(-p.max_tilt), g.const(p.max_tilt))
    cos_t = g.op("Sqrt", g.sub(1.0, g.mul(tilt, tilt)))
    dx_px, dy_px = g.sub(cols, sx), g.sub(rows, sy)
    cc = g.add(sx, g.add(g.mul(dx_px, cos_t), g.mul(dy_px, tilt)))  # [N,1,H,W]
    rr = g.add(sy, g.sub(g.mul(dy_px, cos_t), g.mul(dx_px, tilt)))
    hx_t = g.add(sx, g.add(g.mul(g.sub(hx, sx), cos_t), g.mul(g.sub(hy, sy), tilt)))
    hy_t = g.add(sy, g.sub(g.mul(g.sub(hy, sy), cos_t), g.mul(g.sub(hx, sx), tilt)))
    torso_len = g.op("Max", g.sub(hy_t, sy), g.mul(shoulder_w, 0.5))
    lean = g.div(g.sub(hx_t, sx), torso_len)  # shift of the centre line per row of the frame
    centre_x = g.add(sx, g.mul(g.sub(rr, sy), lean))  # [N,1,H,W]
    on_person = g.fcmp("Greater", person_mask, 0.5)
    # The body's width from the mask (a turned or coated person is wider than the shoulder joints):
    # mask pixels per image row within a window around the centre line, averaged over the chest.
    window = g.mul(g.op("Max", shoulder_w, g.mul(torso_len, 0.45)), p.body_window)
    near_centre = g.op("Clip", g.sub(window, g.op("Abs", g.sub(cc, centre_x))), g.const(0.0), g.const(1.0))
    row_w = g.rsum(g.mul(on_person, near_centre), [3])  # [N,1,H,1]
    chest = g.between(g.div(g.sub(rows, sy), torso_len), 0.15, 0.6)
    body_w = g.wmean(row_w, chest, [2, 3])

    # 2. Garment mask and extent.
    # The runner always supplies the garment's mask (its alpha, or the silhouette of models/garment.py).
    mask_c = cloth_mask
    g_cols = g.fcmp("Greater", g.div(g.rsum(mask_c, [2]), float(height)), 0.01)
    g_rows_frac = g.div(g.rsum(mask_c, [3]), float(width))
    g_rows = g.fcmp("Greater", g_rows_frac, 0.01)
    g_left, g_right = g.first_last(g_cols, cols, [2, 3])
    g_top, g_bottom = g.first_last(g_rows, rows, [2, 3])
    g_h = g.op("Max", g.add(g.sub(g_bottom, g_top), 1.0), g.const(1.0))
    hem = g.between(g.div(g.sub(rows, g_top), g_h), 0.72, 0.92)
    hem_w = g.op("Max", g.mul(g.wmean(g_rows_frac, hem, [2, 3]), float(width)), g.const(1.0))
    g_centre_x = g.div(g.add(g_left, g_right), 2.0)

    # 3. Sampling grid: person pixel -> garment pixel.
    top_y = g.sub(sy, g.mul(shoulder_w, p.collar_lift))
    bottom_y = g.add(hy, g.mul(torso_len, p.hem_drop))
    base_w = g.mul(shoulder_w, p.hem_to_shoulder)
    target_w = g.op("Min", g.op("Max", base_w, g.mul(body_w, 1.05)), g.mul(base_w, p.max_widen))
    scale_x = g.div(target_w, hem_w)  # person px per garment px
    scale_y = g.div(g.op("Max", g.sub(bottom_y, top_y), g.const(1.0)), g_h)
    scale_y = g.op("Min", g.op("Max", scale_y, g.div(scale_x, p.max_stretch)), g.mul(scale_x, p.max_stretch))
    # The warp follows both lines of the torso: the garment's rows run from the shoulder line (level
    # in the frame) to the hip line (its own slope, within max_tilt), its width goes from the
    # shoulders' to the hips' (the hem narrower or wider as the hips are), its centre along the lean.
    def frame(x: str, y: str) -> tuple[str, str]:
        ddx, ddy = g.sub(x, sx), g.sub(y, sy)
        return (g.add(sx, g.add(g.mul(ddx, cos_t), g.mul(ddy, tilt))),
                g.add(sy, g.sub(g.mul(ddy, cos_t), g.mul(ddx, tilt))))

    (lh_cc, lh_rr), (rh_cc, rh_rr) = frame(lhx, lhy), frame(rhx, rhy)
    hd_c, hd_r = g.sub(lh_cc, rh_cc), g.sub(lh_rr, rh_rr)
    hip_slope = g.op("Clip", g.div(g.mul(hd_r, hd_c), g.op("Max", g.mul(hd_c, hd_c), g.const(1.0))),
                     g.const(-p.max_tilt), g.const(p.max_tilt))
    bottom_rr = g.add(top_y, g.mul(g_h, scale_y))  # the garment's hem row on the centre line
    centre_top = g.add(sx, g.mul(g.sub(top_y, sy), lean))
    centre_bottom = g.add(sx, g.mul(g.sub(bottom_rr, sy), lean))
    hem_at = g.add(bottom_rr, g.mul(hip_slope, g.sub(cc, centre_bottom)))
    v = g.div(g.sub(rr, top_y), g.op("Max", g.sub(hem_at, top_y), g.const(1.0)))
    hips = g.op("Clip", g.div(hip_w, g.mul(shoulder_w, p.hip_ratio)), g.const(0.0), g.const(4.0))
    hem_factor = g.op("Clip", g.add(1.0, g.mul(g.sub(hips, 1.0), p.hip_follow)),
                      g.const(1.0 - p.hem_range), g.const(1.0 + p.hem_range))
    scale_v = g.mul(scale_x, g.add(1.0, g.mul(v, g.sub(hem_factor, 1.0))))
    centre_v = g.add(centre_top, g.mul(v, g.sub(centre_bottom, centre_top)))
    gx = g.add(g_centre_x, g.div(g.sub(cc, centre_v), scale_v))
    gy = g.add(g.sub(g_top, 0.5), g.mul(v, g_h))
    nx = g.sub(g.div(g.mul(gx, 2.0), float(width)), 1.0)
    ny = g.sub(g.div(g.mul(gy, 2.0), float(height)), 1.0)
    zero = g.mul(g.add(nx, ny), 0.0)
    grid = g.op("Transpose", g.op("Concat", g.add(nx, zero), g.add(ny, zero), axis=1), perm=[0, 2, 3, 1])
    warped = g.op("GridSample", cloth, grid, align_corners=0, mode="bilinear", padding_mode="zeros")
    warped_mask = g.op("GridSample", mask_c, grid, align_corners=0, mode="bilinear", padding_mode="zeros")

    # 4. Where the garment may go: the torso band, on the person, not over head, forearms or hands.
    rel = g.op("Clip", g.div(g.sub(rr, sy), torso_len), g.const(0.0), g.const(1.0))
    half_top = g.mul(shoulder_w, p.torso_half_width)
    half_hip = g.mul(g.op("Max", hip_w, shoulder_w), p.hip_half_width)
    half = g.add(half_top, g.mul(rel, g.sub(half_hip, half_top)))
    half = g.op("Max", half, g.op("Min", g.add(g.div(row_w, 2.0), 2.0), g.mul(half, p.max_widen)))
    across = g.op("Clip", g.sub(half, g.op("Abs", g.sub(cc, centre_x))), g.const(0.0), g.const(1.0))
    down = g.op("Clip", g.add(g.sub(rr, top_y), 1.0), g.const(0.0), g.const(1.0))
    band_bottom = g.add(bottom_y, g.mul(hip_slope, g.sub(cc, centre_x)))  # along the hip line, like the hem
    up = g.op("Clip", g.add(g.sub(band_bottom, rr), 1.0), g.const(0.0), g.const(1.0))
    torso = g.mul(g.mul(across, down), up)

    face = [pt(i) for i in FACE_POINTS]
    face_x = g.op("Concat", *[f[0] for f in face], axis=1)
    face_y = g.op("Concat", *[f[1] for f in face], axis=1)
    fx0, fx1 = g.rmin(face_x, [1]), g.rmax(face_x, [1])
    fx = g.div(g.add(fx0, fx1), 2.0)
    fy = g.div(g.add(g.rmin(face_y, [1]), g.rmax(face_y, [1])), 2.0)
    ear_w = _dist(g, face[LEFT_EAR][0], face[LEFT_EAR][1], face[RIGHT_EAR][0], face[RIGHT_EAR][1])
    head_r = g.mul(g.op("Max", ear_w, g.mul(shoulder_w, 0.6)), p.head_radius)
    disc = g.op("Clip", g.sub(head_r, _dist(g, cols, rows, fx, fy)), g.const(0.0), g.const(1.0))
    # The face box: the face keypoints' extent, wider, from the forehead to below the chin (side views,
    # where ears and nose line up and the disc is small, still keep the whole face).
    fw = g.op("Max", g.sub(fx1, fx0), g.const(1.0))
    eyes = g.op("Concat", *[face[i][1] for i in range(1, 7)], axis=1)
    eyes_y = g.rmin(eyes, [1])
    mouth_y = g.op("Max", face[9][1], face[10][1])
    # Below the shoulder line (a person leaning forward, the head down) the box ends at the chin itself,
    # ``chin_eyes`` eye-to-mouth heights below the mouth, so the chest under the chin is dressed.
    eye_mid = g.div(g.add(g.rmin(eyes, [1]), g.rmax(eyes, [1])), 2.0)
    eye_to_mouth = g.op("Max", g.sub(mouth_y, eye_mid), g.const(1.0))
    chin_y = g.add(mouth_y, g.op("Min", g.mul(fw, p.chin),
                                 g.op("Max", g.sub(sy, mouth_y), g.mul(eye_to_mouth, p.chin_eyes))))
    box = g.mul(g.between(cols, g.sub(fx0, g.mul(fw, p.face_margin)), g.add(fx1, g.mul(fw, p.face_margin))),
                g.between(rows, g.sub(eyes_y, g.mul(fw, p.forehead)), chin_y))
    head = g.op("Max", disc, box)

    # Skin: the chromaticity of the face's centre (nose to eyes); weighted by the face colour's own
    # saturation, so a greyscale photo (where everything would match) protects no skin.
    lum_w = g.const(np.asarray([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1))
    total = g.op("Max", g.rsum(person, [1]), g.const(1e-3))
    chroma = g.div(person, total)  # [N,3,H,W], sums to 1
    face_r = g.op("Max", g.mul(fw, 0.3), g.const(2.0))
    face_core = g.mul(g.op("Clip", g.sub(face_r, _dist(g, cols, rows, fx, fy)), g.const(0.0), g.const(1.0)), on_person)
    face_chroma = g.wmean(chroma, face_core, [2, 3])  # [N,3,1,1]
    face_colour = g.wmean(person, face_core, [2, 3])
    saturation = g.sub(g.rmax(face_colour, [1]), g.rmin(face_colour, [1]))
    colourful = g.op("Clip", g.div(g.sub(saturation, 0.04), 0.04), g.const(0.0), g.const(1.0))
    chroma_d = g.rmax(g.op("Abs", g.sub(chroma, face_chroma)), [1])
    skin = g.mul(g.fcmp("Less", chroma_d, p.skin_chroma), colourful)

    arm_r = g.op("Max", g.mul(shoulder_w, p.arm_radius), g.const(2.0))
    reach = g.mul(shoulder_w, p.skin_reach)
    protect = head
    sleeve_guard = g.mul(head, 0.0)  # what a sleeve never covers: forearms, hands, skin near a hand
    for shoulder, elbow, wrist, index in ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, LEFT_INDEX),
                                          (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, RIGHT_INDEX)):
        s, e, w, i = pt(shoulder), pt(elbow), pt(wrist), pt(index)
        mid = (g.div(g.add(s[0], e[0]), 2.0), g.div(g.add(s[1], e[1]), 2.0))
        seen = g.fcmp("Greater", g.op("Min", e[2], w[2]), p.visible)
        fore = _capsule(g, cols, rows, e[:2], w[:2], arm_r)
        arm = g.op("Max", _capsule(g, cols, rows, mid, e[:2], arm_r), fore)
        hand = _capsule(g, cols, rows, w[:2], (g.add(i[0], g.sub(i[0], w[0])), g.add(i[1], g.sub(i[1], w[1]))),
                        g.mul(arm_r, 1.3))
        hand_x, hand_y = g.div(g.add(w[0], i[0]), 2.0), g.div(g.add(w[1], i[1]), 2.0)
        near_hand = g.fcmp("Less", _dist(g, cols, rows, hand_x, hand_y), reach)
        hand_skin = g.mul(g.mul(near_hand, skin), g.fcmp("Greater", w[2], p.visible))
        protect = g.op("Max", protect, g.op("Max", g.mul(g.op("Max", arm, hand), seen), hand_skin))
        forearm = g.op("Max", fore, hand)
        sleeve_guard = g.op("Max", sleeve_guard, g.op("Max", g.mul(forearm, seen), hand_skin))

    # Skin above the shoulder line (a neck, a chin, a neighbour's face reaching into the collar) stays.
    above = g.mul(skin, g.fcmp("Less", rr, sy))
    protect = g.op("Max", protect, above)
    sleeve_protect = g.op("Max", g.op("Max", head, above), sleeve_guard)

    alpha_torso = g.mul(g.mul(g.mul(warped_mask, torso), on_person), g.sub(1.0, protect))

    # 4b. Sleeves along the upper arms: around each shoulder joint, the garment is turned so that its
    # own sleeve (the mask mass beyond the hem's width above the armpit, from the point where the
    # torso warp takes the shoulder joint) runs along the person's upper arm (shoulder to elbow).
    # Only on the person, on a visible upper arm, never over the head, forearm or hand; a garment
    # without sleeves has no mass there and adds nothing. Worked out at half resolution (the map
    # is a turn and the zone a capsule: both smooth) and brought back bilinearly.
    hh, hw2 = height // 2, width // 2
    rows_h = g.const(np.arange(hh, dtype=np.float32).reshape(1, 1, hh, 1) * 2 + 1.0, hint="rows_h")
    cols_h = g.const(np.arange(hw2, dtype=np.float32).reshape(1, 1, 1, hw2) * 2 + 1.0, hint="cols_h")
    g_mass = g.op("Max", g.rsum(mask_c, [2, 3]), g.const(1.0))
    upper = g.fcmp("Less", rows, g.add(g_top, g.mul(g_h, p.armpit)))
    up_cols = g.rsum(g.mul(mask_c, upper), [2])  # [N,1,1,W]: the garment's columns above the armpit
    sleeve_rgba = g.op("Concat", cloth, mask_c, axis=1)
    grids, zones = [], []
    for shoulder, elbow in ((LEFT_SHOULDER, LEFT_ELBOW), (RIGHT_SHOULDER, RIGHT_ELBOW)):
        s, e = pt(shoulder), pt(elbow)
        # Where the torso warp sends this shoulder joint (the pivot), in garment px.
        ddx, ddy = g.sub(s[0], sx), g.sub(s[1], sy)
        s_cc = g.add(sx, g.add(g.mul(ddx, cos_t), g.mul(ddy, tilt)))
        s_rr = g.add(sy, g.sub(g.mul(ddy, cos_t), g.mul(ddx, tilt)))
        s_centre = g.add(sx, g.mul(g.sub(s_rr, sy), lean))
        px_g = g.add(g_centre_x, g.div(g.sub(s_cc, s_centre), scale_x))
        py_g = g.add(g.sub(g_top, 0.5), g.div(g.sub(s_rr, top_y), scale_y))
        side = g.sub(g.mul(g.fcmp("GreaterOrEqual", g.sub(s_cc, sx), 0.0), 2.0), 1.0)  # +1: garment right
        beyond = g.fcmp("Greater", g.mul(g.sub(cols, g_centre_x), side), g.div(hem_w, 2.0))  # [N,1,1,W]
        col_w = g.mul(up_cols, beyond)
        mass = g.rsum(col_w, [2, 3])
        has = g.fcmp("Greater", g.div(mass, g_mass), p.sleeve_mass)
        row_w = g.mul(g.rsum(g.mul(mask_c, beyond), [3]), upper)  # [N,1,H,1]
        bx = g.sub(g.wmean(cols, col_w, [2, 3]), px_g)
        by = g.sub(g.wmean(rows, row_w, [2, 3]), py_g)
        b_len = g.op("Max", g.op("Sqrt", g.add(g.mul(bx, bx), g.mul(by, by))), g.const(1e-3))
        bx, by = g.div(bx, b_len), g.div(by, b_len)
        ax, ay = g.sub(e[0], s[0]), g.sub(e[1], s[1])
        a_len = g.op("Max", g.op("Sqrt", g.add(g.mul(ax, ax), g.mul(ay, ay))), g.const(1e-3))
        ax, ay = g.div(ax, a_len), g.div(ay, a_len)
        # The turn taking the arm's direction to the sleeve's, scaled to garment px: an affine map
        # whose column and row terms stay separable until the last add.
        c = g.div(g.add(g.mul(ax, bx), g.mul(ay, by)), scale_x)
        sn = g.div(g.sub(g.mul(ax, by), g.mul(ay, bx)), scale_x)
        qx, qy = g.sub(cols_h, s[0]), g.sub(rows_h, s[1])
        gx_s = g.add(g.add(px_g, g.mul(qx, c)), g.mul(qy, g.sub(0.0, sn)))
        gy_s = g.add(g.add(py_g, g.mul(qx, sn)), g.mul(qy, c))
        seen_upper = g.fcmp("Greater", g.op("Min", s[2], e[2]), p.visible)
        capsule = _capsule(g, cols_h, rows_h, s[:2], e[:2], g.mul(arm_r, p.sleeve_radius))
        zones.append(g.mul(capsule, g.mul(seen_upper, has)))
        grids.append((gx_s, gy_s))
    first = g.fcmp("GreaterOrEqual", zones[0], zones[1])
    gx_s = g.add(g.mul(first, g.sub(grids[0][0], grids[1][0])), grids[1][0])
    gy_s = g.add(g.mul(first, g.sub(grids[0][1], grids[1][1])), grids[1][1])
    zone = g.op("Max", zones[0], zones[1])
    grid_s = g.op("Transpose", g.op("Concat", g.sub(g.mul(gx_s, 2.0 / width), 1.0),
                                    g.sub(g.mul(gy_s, 2.0 / height), 1.0), axis=1), perm=[0, 2, 3, 1])
    sleeve = g.op("GridSample", sleeve_rgba, grid_s, align_corners=0, mode="bilinear", padding_mode="zeros")
    sleeve = g.op("Concat", g.op("Slice", sleeve, g.i64(0), g.i64(3), g.i64(1)),
                  g.mul(g.op("Slice", sleeve, g.i64(3), g.i64(4), g.i64(1)), zone), axis=1)
    sleeve = g.op("Resize", sleeve, "", g.const([1.0, 1.0, 2.0, 2.0]), mode="linear")
    sleeve_rgb = g.op("Slice", sleeve, g.i64(0), g.i64(3), g.i64(1))
    alpha_sleeve = g.mul(g.mul(g.op("Slice", sleeve, g.i64(3), g.i64(4), g.i64(1)), on_person),
                         g.sub(1.0, sleeve_protect))
    # The torso's garment first; a sleeve where the torso's leaves off.
    sleeve_share = g.mul(alpha_sleeve, g.sub(1.0, alpha_torso))
    alpha_hard = g.add(alpha_torso, sleeve_share)
    warped = g.add(warped, g.mul(g.fcmp("Greater", sleeve_share, alpha_torso), g.sub(sleeve_rgb, warped)))
    alpha = g.op("AveragePool", alpha_hard, kernel_shape=[5, 5], pads=[2, 2, 2, 2], count_include_pad=1)

    # 5. Shading from the covered clothing, normalised by its own mean.
    lum = g.rsum(g.mul(person, lum_w), [1])
    # Only the broad light (a 1/8-scale blur brought back bilinearly; the canvas is a multiple of 8),
    # not the old clothes' own pattern.
    small = g.op("AveragePool", lum, kernel_shape=[8, 8], strides=[8, 8])
    small = g.op("AveragePool", small, kernel_shape=[5, 5], pads=[2, 2, 2, 2], count_include_pad=0)
    lum_soft = g.op("Resize", small, "", g.const([1.0, 1.0, 8.0, 8.0]), mode="linear")
    covered_mean = g.wmean(lum_soft, alpha_hard, [2, 3])
    ratio = g.div(g.add(lum_soft, 0.15), g.add(covered_mean, 0.15))
    shade = g.op("Clip", g.add(g.mul(g.sub(ratio, 1.0), p.shading), 1.0), g.const(p.shade_min), g.const(p.shade_max))
    shaded = g.op("Clip", g.mul(warped, shade), g.const(0.0), g.const(1.0))
    blended = g.add(person, g.mul(alpha, g.sub(shaded, person)))
    g.named("Clip", [blended, g.const(0.0), g.const(1.0)], "result")
    g.named("Identity", [alpha], "alpha")

    def image(name: str, channels: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, height, width])

    inputs = [image(person, 3), image(cloth, 3), image(cloth_mask, 1), image(person_mask, 1),
              helper.make_tensor_value_info(kps, TensorProto.FLOAT, ["N", KEYPOINTS, 3])]
    outputs = [image("result", 3), image("alpha", 1)]
    return helper.make_graph(g.nodes, "tryon_fit", inputs, outputs, initializer=g.initializers)
