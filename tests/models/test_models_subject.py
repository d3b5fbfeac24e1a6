"""models.subject on constructed person-stage outputs: who is dressed, and the two refusals."""

from __future__ import annotations

import numpy as np
import pytest

from models.pipeline import place
from models.stages import PersonOutputs
from models.subject import MultiplePeopleError, NoTorsoError, choose_subject, figure_boxes

SIZE = 256


def view(figures: list[tuple[int, int, int]], shoulders: tuple[float, float, float] = (100, 156, 90),
         face_width: float = 24.0) -> PersonOutputs:
    """A square photo whose mask holds rectangles (x0, x1, top) and a skeleton with shoulders at
    (left x, right x, y); face keypoints spread over ``face_width`` above the shoulders' centre."""
    mask = np.zeros((1, SIZE, SIZE), dtype=np.float32)
    for x0, x1, top in figures:
        mask[0, top:, x0:x1] = 1.0
    kp = np.zeros((33, 3), dtype=np.float32)
    kp[:, 2] = 1.0
    rx, lx, sy = shoulders
    cx = (rx + lx) / 2
    for i in range(11):
        kp[i, :2] = (cx - face_width / 2 + face_width * i / 10, sy - 40 + (i % 3))
    kp[11, :2], kp[12, :2] = (lx, sy), (rx, sy)
    kp[23, :2], kp[24, :2] = (lx - 6, sy + 80), (rx + 6, sy + 80)
    kp[13:23, :2] = kp[11, :2]
    kp[:, :2] /= SIZE
    return PersonOutputs(score=0.9, placement=place(SIZE, SIZE, SIZE, SIZE, "letterbox"), mask=mask, keypoints=kp)


def test_one_person_is_dressed_and_recorded() -> None:
    subject = choose_subject(view([(80, 176, 40)]))
    assert subject.other_figures == 0 and subject.mask_share == 1.0
    x0, y0, x1, y1 = subject.box
    assert x0 < 100 and x1 > 156 and 0 <= y0 < 50 and y1 == SIZE


def test_a_dominant_person_is_dressed_and_the_smaller_figure_beside_is_counted() -> None:
    subject = choose_subject(view([(80, 176, 40), (216, 256, 40)]))  # 42 % of the main figure
    assert subject.other_figures == 1 and subject.mask_share < 1.0


def test_two_people_of_a_size_are_refused() -> None:
    with pytest.raises(MultiplePeopleError) as info:
        choose_subject(view([(80, 176, 40), (196, 256, 40)], shoulders=(100, 156, 90)))
    assert info.value.error_type == "multiple_people" and not info.value.transient


def test_shoulders_below_the_photo_are_no_torso() -> None:
    with pytest.raises(NoTorsoError):
        choose_subject(view([(60, 196, 0)], shoulders=(40, 216, SIZE + 20), face_width=120))


def test_a_face_filling_the_frame_is_no_torso() -> None:
    with pytest.raises(NoTorsoError) as info:
        choose_subject(view([(20, 236, 0)], shoulders=(60, 196, 200), face_width=130))
    assert "close-up" in str(info.value)


def test_figure_boxes_split_figures_side_by_side_and_leave_one_alone() -> None:
    # Two people side by side (the second look of a low-scoring photo): one box each, largest first.
    boxes = figure_boxes(view([(20, 100, 40), (140, 240, 60)]))
    assert len(boxes) == 2
    (a0, _, a1, _), (b0, _, b1, _) = boxes
    assert a0 <= 140 < 240 <= a1 and b0 <= 20 < 100 <= b1, boxes  # widened by a fifth, within the photo
    assert figure_boxes(view([(80, 176, 40)])) == []  # one figure: no second look
    assert figure_boxes(view([(20, 120, 40), (200, 210, 200)])) == []  # a sliver is no figure
