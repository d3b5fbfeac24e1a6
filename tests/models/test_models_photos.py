"""The default pipeline (person-mediapipe+tryon-fit) on real photos of people, and on photos without one.

The photos come from files shipped in PyPI packages (tests/data/photos/README.md lists sources and
licences). Regions (torso, face, background) come from the person stage's view of each photo and
are drawn wider than the try-on graph's own torso band (modelkit/checks.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imaging.decode import decode_image
from modelkit.checks import PhotoFigures, measure
from modelkit.cli import sample_garments
from models.runner import TryOnJob, TryOnResult, TryOnRunner
from models.stages import NoPersonError

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
PEOPLE = ("astronaut", "cameraman", "grace-hopper")
NOBODY = ("coffee", "cat", "china", "flower")
GARMENTS = sample_garments()


def photo(name: str) -> bytes:
    return (PHOTOS / f"{name}.jpg").read_bytes()


@pytest.fixture(scope="module")
def runner() -> TryOnRunner:
    return TryOnRunner(None, intra_op_threads=2, max_batch=8, quality=95)


@pytest.mark.parametrize("garment", range(len(GARMENTS)), ids=[label for label, _ in GARMENTS])
@pytest.mark.parametrize("name", PEOPLE)
def test_garment_lands_on_the_torso_and_nowhere_else(runner: TryOnRunner, name: str, garment: int) -> None:
    person = photo(name)
    figures: PhotoFigures = measure(runner, person, GARMENTS[garment][1])
    height, width = runner.analyse_person(person).mask_on_photo().shape
    assert figures.changed > 0.05 * height * width, figures.line()  # a garment was really put on
    assert figures.torso_share >= 0.90, figures.line()
    assert figures.face_unchanged >= 0.98, figures.line()
    assert figures.background_unchanged >= 0.95, figures.line()


@pytest.mark.parametrize("name", PEOPLE)
def test_person_stage_finds_the_person_and_a_plausible_skeleton(runner: TryOnRunner, name: str) -> None:
    view = runner.analyse_person(photo(name))
    manifest = runner.person_manifest
    assert manifest is not None and view.score >= manifest.min_person_score
    mask = view.mask_on_photo()
    kp = view.keypoints_on_photo()
    assert 0.1 < (mask > 0.5).mean() < 0.9
    nose, shoulders = kp[0], kp[[11, 12]]
    assert nose[1] < shoulders[:, 1].min(), "the nose is above both shoulders"
    assert np.linalg.norm(shoulders[0, :2] - shoulders[1, :2]) > 0.1 * mask.shape[1]
    inside = [mask[int(np.clip(y, 0, mask.shape[0] - 1)), int(np.clip(x, 0, mask.shape[1] - 1))] for x, y, _ in kp[:13]]
    assert np.mean(np.asarray(inside) > 0.5) >= 0.7, "head and shoulder keypoints lie on the person mask"


@pytest.mark.parametrize("name", NOBODY)
def test_no_person_is_a_permanent_error_not_a_pasted_garment(runner: TryOnRunner, name: str) -> None:
    with pytest.raises(NoPersonError) as info:
        runner.run_one(photo(name), GARMENTS[0][1])
    assert info.value.error_type == "no_person" and info.value.transient is False
    assert "no person" in str(info.value)


def test_batch_mixes_people_and_nobody_and_matches_batch_one(runner: TryOnRunner) -> None:
    names = ["astronaut", "coffee", "cameraman", "grace-hopper", "cat"]
    jobs = [TryOnJob(photo(n), GARMENTS[i % 2][1], key=n) for i, n in enumerate(names)]
    batched = runner.run_batch(jobs)
    single = TryOnRunner(None, intra_op_threads=2, max_batch=1, quality=95)
    for job, out in zip(jobs, batched, strict=True):
        alone = single.run_batch([job])[0]
        if job.key in NOBODY:
            assert isinstance(out, NoPersonError) and isinstance(alone, NoPersonError)
            continue
        assert isinstance(out, TryOnResult) and isinstance(alone, TryOnResult)
        assert out.key == job.key and out.batch_size == 3
        assert out.timings.person > 0 and out.timings.inference > 0
        a = decode_image(out.image).rgb.astype(np.int16)
        b = decode_image(alone.image).rgb.astype(np.int16)
        assert a.shape == b.shape and (np.abs(a - b) > 8).mean() < 0.001, "batching does not change a result"
