"""models.subject on constructed person-stage outputs: who is dressed, and the two refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.pipeline import place
from models.stages import NoPersonError, PersonOutputs
from models.subject import (
    Figure,
    MultiplePeopleError,
    NoTorsoError,
    Subject,
    choose_among_figures,
    choose_subject,
    figure_boxes,
)

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


def with_face(out: PersonOutputs, eyes_y: float, mouth_y: float) -> PersonOutputs:
    """``out`` with its eye keypoints at ``eyes_y`` and its mouth at ``mouth_y`` (photo px)."""
    assert out.keypoints is not None
    kp = out.keypoints * SIZE
    kp[1:7, 1], kp[9:11, 1], kp[0, 1] = eyes_y, mouth_y, (eyes_y + mouth_y) / 2
    return replace(out, keypoints=(kp / SIZE).astype(np.float32))


def close_up(shoulder_y: float) -> PersonOutputs:
    """A skeleton as BlazePose gives it on a face close-up: face keypoints over a fifth of the width
    (it shrinks a face that fills the frame), eyes at y 100, mouth at y 130, shoulders 2.4 faces apart."""
    return with_face(view([(20, 236, 20)], shoulders=(60, 196, shoulder_y), face_width=56), 100, 130)


def test_shoulders_at_the_mouth_of_a_large_face_are_no_torso() -> None:
    """Regression: a 112-px face close-up was dressed over mouth and chin (the width rules missed it)."""
    with pytest.raises(NoTorsoError) as info:
        choose_subject(close_up(shoulder_y=135))
    assert "at the mouth" in str(info.value)
    assert choose_subject(close_up(shoulder_y=175)).other_figures == 0  # a neck between: dressed


WHOLE = place(512, 256, SIZE, SIZE, "letterbox")  # a photo twice as wide as high, two figures in it


def second_look(masses: tuple[float, float], scores: tuple[float, float],
                right_box: tuple[int, int, int, int] = (200, 0, 456, 256),
                shoulders: tuple[float, float, float] = (100, 156, 90)) -> tuple[Subject, PersonOutputs]:
    """The second look's verdict on a low-scoring photo: the larger figure at ``right_box`` (a
    256×256 crop showing one person, shoulders at crop x 100..156), the smaller at x 0..150."""
    whole = PersonOutputs(score=0.4, placement=WHOLE, mask=np.zeros((1, SIZE, SIZE), dtype=np.float32))
    figures = [Figure(right_box, masses[0]), Figure((0, 0, 150, 256), masses[1])]
    views = [replace(view([(int(shoulders[0]) - 20, int(shoulders[1]) + 6, 40)], shoulders=shoulders), score=s)
             for s in scores]
    return choose_among_figures(whole, figures, views, min_score=0.7)


def test_second_look_dresses_a_clearly_dominant_person_and_records_who() -> None:
    """Regression: a photo that passed only through the second look was refused even when one person dominated."""
    subject, outputs = second_look(masses=(6000.0, 2000.0), scores=(0.9, 0.85))
    assert subject.other_figures == 1 and subject.mask_share == pytest.approx(0.75)
    x0, _, x1, _ = subject.box
    assert 200 <= x0 < 300 and 356 < x1 <= 512, subject.box
    kp = outputs.keypoints_on_photo()
    assert kp[12, 0] == pytest.approx(300, abs=1) and kp[11, 0] == pytest.approx(356, abs=1)  # crop x + 200
    mask = outputs.mask_on_photo()
    assert mask.shape == (256, 512) and mask[200, 328] > 0.5 and mask[200, 60] == 0


def test_second_look_refuses_when_no_one_dominates() -> None:
    with pytest.raises(MultiplePeopleError):
        second_look(masses=(6000.0, 4000.0), scores=(0.9, 0.85))  # 1.5×: no one dominates
    with pytest.raises(MultiplePeopleError):
        second_look(masses=(6000.0, 2000.0), scores=(0.9, 0.85), right_box=(256, 0, 512, 256),
                    shoulders=(200, 250, 90))  # at the photo's right edge: off-centre
    with pytest.raises(MultiplePeopleError):
        second_look(masses=(6000.0, 2000.0), scores=(0.5, 0.85))  # the large figure is no sure person
    with pytest.raises(NoPersonError):
        second_look(masses=(6000.0, 2000.0), scores=(0.3, 0.2))  # no person in either


def test_a_person_turned_three_quarters_is_dressed() -> None:
    """Regression: a seated man turned three-quarters (shoulders 1.3 face widths apart in the photo,
    a small face, a neck between) was refused as a face close-up."""
    turned = with_face(view([(92, 164, 60)], shoulders=(110, 146, 150), face_width=28), 100, 112)
    assert choose_subject(turned).other_figures == 0


def test_a_neighbour_close_beside_does_not_lend_the_subject_dominance() -> None:
    """Regression: two people of a size standing close (a gap of a few columns between them) had the
    nearer part of the neighbour counted in the subject's generous body columns, which then
    "dominated" 2.3 to 1, and one of the two was dressed."""
    with pytest.raises(MultiplePeopleError) as info:
        choose_subject(view([(80, 160, 40), (166, 236, 40)]))
    assert "side by side" in str(info.value)
    # A clearly smaller figure beside stays a dressed photo with one other figure.
    assert choose_subject(view([(80, 176, 40), (196, 236, 100)])).other_figures == 1


def test_a_shoulder_above_the_mouth_is_no_upright_torso() -> None:
    """Regression: two people overlapping (a woman behind a seated man) mixed their keypoints — his
    face, her shoulder at his mouth's height — and the garment spread over both and his chin."""
    def skeleton(left_shoulder_y: float) -> PersonOutputs:
        v = view([(60, 200, 20)])
        assert v.keypoints is not None
        kp = v.keypoints.copy()
        for i in range(11):  # eyes at y 40, mouth at y 56: 16 px eye to mouth
            kp[i, 1] = (56.0 if i in (9, 10) else 40.0 if i in range(1, 7) else 48.0) / SIZE
        kp[11, 1], kp[12, 1] = left_shoulder_y / SIZE, 90 / SIZE
        return replace(v, keypoints=kp)

    with pytest.raises(NoTorsoError) as info:
        choose_subject(skeleton(left_shoulder_y=50))  # 6 px (0.4 eye-to-mouth) above the mouth
    assert "upright" in str(info.value)
    assert choose_subject(skeleton(left_shoulder_y=58)).other_figures == 0  # leaning forward: dressed


def test_neighbour_boxes_and_a_comparable_neighbour() -> None:
    from models.subject import comparable_neighbour, neighbour_boxes

    v = view([(90, 166, 40), (20, 45, 60), (210, 235, 60)])  # the person in the middle, two smaller beside
    subject = choose_subject(v)
    boxes = neighbour_boxes(v, subject)
    x0, _, x1, _ = subject.box
    assert len(boxes) == 2 and boxes[0][0] <= 20 and boxes[1][2] >= 235
    assert x0 < boxes[0][2] < x1 and x0 < boxes[1][0] < x1  # each reaches into the person's box
    # Shoulders 56 px apart in the person's view; a neighbour's view with shoulders 40 px apart, face elsewhere.
    near = view([(20, 45, 60)], shoulders=(15, 55, 100))
    assert comparable_neighbour(v, [near], min_score=0.7) == pytest.approx(40 / 56, rel=0.01)
    assert comparable_neighbour(v, [replace(near, score=0.5)], min_score=0.7) == 0.0  # not a person
    assert comparable_neighbour(v, [v], min_score=0.7) == 0.0  # the person again, not a neighbour
