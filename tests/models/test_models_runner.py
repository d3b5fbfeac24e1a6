"""The shipped models and the runner: golden checks, determinism, swapping, batching, null model."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from imaging import ImageError, UnsupportedFormatError, decode_image
from modelkit import build
from modelkit.bench import main as bench_main
from modelkit.cli import main as cli_main
from modelkit.convert import PERSON_VERSION
from modelkit.samples import make_garment, make_person, to_bytes
from models.registry import ARTEFACTS
from models.runner import TryOnJob, TryOnResult, TryOnRunner, default_intra_op_threads

ROOT = Path(__file__).resolve().parents[2]
MAX = 10_000_000


@pytest.fixture(scope="module")
def runner() -> TryOnRunner:
    return TryOnRunner(intra_op_threads=2, max_batch=4)


def decode(data: bytes) -> np.ndarray:
    return decode_image(data, max_pixels=MAX).rgb.astype(np.float32)


def region(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return arr[top:bottom, left:right]


def garment_colour(garment) -> np.ndarray:
    """Mean colour of the garment's own pixels (alpha or distance from its light background)."""
    arr = np.asarray(garment.convert("RGB"), dtype=np.float32)
    if garment.mode == "RGBA":
        mask = np.asarray(garment)[:, :, 3] > 128
    else:
        mask = np.abs(arr - arr[:4, :4].reshape(-1, 3).mean(0)).sum(-1) > 60
    return arr[mask].mean(0)


def check_golden(person, garment, result: bytes, person_bytes: bytes | None = None) -> None:
    """Torso moves to the garment's colour; head, hands and background stay (vs the decoded input)."""
    after = decode(result)
    before_arr = decode(person_bytes) if person_bytes else np.asarray(person.image, dtype=np.float32)
    assert after.shape == before_arr.shape
    target = garment_colour(garment)
    d_before = np.linalg.norm(region(before_arr, person.torso).mean((0, 1)) - target)
    d_after = np.linalg.norm(region(after, person.torso).mean((0, 1)) - target)
    assert d_after < 0.35 * d_before, (d_before, d_after)
    # Most torso pixels changed, not only a few.
    changed = np.abs(region(after, person.torso) - region(before_arr, person.torso)).sum(-1) > 60
    assert changed.mean() > 0.8
    for name in ("head", "background", "left_hand", "right_hand"):
        box = getattr(person, name)
        diff = np.abs(region(after, box) - region(before_arr, box)).mean()
        assert diff < 4.0, (name, diff)


POSES = [(0.0, 0.9, 0), (-0.14, 0.74, 1), (0.13, 0.82, 2), (0.05, 0.7, 3)]


@pytest.fixture(scope="module")
def geometric() -> TryOnRunner:
    return TryOnRunner("tryon-geometric", intra_op_threads=2, max_batch=4)


@pytest.mark.parametrize(("offset_x", "scale", "seed"), POSES)
@pytest.mark.parametrize("model", ["pipeline", "geometric"])
def test_golden_tryon_on_varied_poses(
    runner: TryOnRunner, geometric: TryOnRunner, model: str, offset_x: float, scale: float, seed: int
) -> None:
    chosen = runner if model == "pipeline" else geometric
    person = make_person(384, 512, seed=seed, offset_x=offset_x, scale=scale)
    garment = make_garment(320, 320, seed=seed)
    data = to_bytes(person.image)
    result = chosen.run_one(data, to_bytes(garment))
    assert (result.width, result.height, result.format) == (384, 512, "jpeg")
    expected = f"{PERSON_VERSION}+{build.FIT_VERSION}" if model == "pipeline" else build.TRYON_VERSION
    assert result.model_version == expected
    check_golden(person, garment, result.image, data)


def test_transparent_garment_alpha_is_the_mask(runner: TryOnRunner) -> None:
    person = make_person(300, 420, seed=5, offset_x=-0.05, scale=0.85)
    garment = make_garment(256, 256, seed=1, transparent=True)
    prepared = runner.prepare(TryOnJob(to_bytes(person.image), to_bytes(garment, "PNG")))
    mask = prepared.tensors["cloth_mask"]
    assert mask.min() == 0.0 and mask.max() == 1.0  # the alpha
    opaque = runner.prepare(TryOnJob(to_bytes(person.image), to_bytes(garment.convert("RGB"))))
    found = opaque.tensors["cloth_mask"][0]
    # Without alpha: the garment's silhouette found in the photo (0 on its border, 1 in its middle).
    assert float(found[0].max()) == 0.0 and float(found[found.shape[0] // 2, found.shape[1] // 2]) > 0.99
    data = to_bytes(person.image)
    check_golden(person, garment, runner.run_one(data, to_bytes(garment, "PNG")).image, data)


def test_letterboxed_other_aspect_and_webp_output() -> None:
    r = TryOnRunner(intra_op_threads=1, output_format="webp", quality=85)
    person = make_person(600, 500, seed=2, scale=0.92)  # landscape: letterboxed into a portrait contract
    garment = make_garment(200, 300, seed=2)
    data = to_bytes(person.image, "WEBP")
    result = r.run_one(data, to_bytes(garment, "WEBP"))
    assert (result.width, result.height, result.mime_type) == (600, 500, "image/webp")
    check_golden(person, garment, result.image, data)


def test_deterministic_output(runner: TryOnRunner) -> None:
    person = make_person(256, 320, seed=9, offset_x=0.1)
    job = TryOnJob(to_bytes(person.image), to_bytes(make_garment(200, 200, seed=2)))
    a, b = runner.run_batch([job])[0], runner.run_batch([job])[0]
    assert isinstance(a, TryOnResult) and isinstance(b, TryOnResult)
    assert a.image == b.image


def test_second_model_swaps_by_configuration(tmp_path: Path) -> None:
    path = tmp_path / "tryon-small.onnx"
    build.write_model(build.build_tryon_model(320, 240, name="tryon-small", version="tryon-small-test-7"), path)
    r = TryOnRunner(str(path), intra_op_threads=1, max_batch=2)
    assert r.model_version == "tryon-small-test-7" and r.manifest.person_input.height == 320
    person = make_person(384, 512, seed=4, offset_x=0.08, scale=0.8)
    garment = make_garment(256, 256, seed=0)
    data = to_bytes(person.image)
    result = r.run_one(data, to_bytes(garment))
    assert result.model_version == "tryon-small-test-7" and (result.width, result.height) == (384, 512)
    check_golden(person, garment, result.image, data)


def test_null_model_is_identity() -> None:
    r = TryOnRunner("null", intra_op_threads=1, max_batch=8, quality=100)
    assert r.model_version == build.NULL_VERSION and r.manifest.person_input.width == 48
    person = make_person(240, 320, seed=1)
    data = to_bytes(person.image, "PNG")
    result = r.run_one(data, to_bytes(make_garment(64, 64)))
    diff = np.abs(decode(result.image) - np.asarray(person.image, dtype=np.float32))
    assert diff.mean() < 1.0  # only the JPEG re-encode


def test_batch_isolates_bad_input_and_matches_batch_one(runner: TryOnRunner) -> None:
    jobs = []
    for i in range(4):
        p = make_person(256, 340, seed=i, offset_x=0.04 * i - 0.06, scale=0.8 + 0.03 * i)
        jobs.append(TryOnJob(to_bytes(p.image), to_bytes(make_garment(200, 200, seed=i)), key=i))
    jobs.insert(2, TryOnJob(b"not an image at all", jobs[0].cloth, key="bad"))
    batch = runner.run_batch(jobs)
    assert isinstance(batch[2], UnsupportedFormatError)
    good = [r for r in batch if isinstance(r, TryOnResult)]
    assert [r.key for r in good] == [0, 1, 2, 3]
    assert all(r.batch_size == 4 for r in good)  # one model call for the four good jobs
    assert len({r.timings.inference for r in good}) == 1
    for job, res in zip([j for j in jobs if j.key != "bad"], good, strict=True):
        single = runner.run_batch([job])[0]
        assert isinstance(single, TryOnResult) and single.batch_size == 1
        assert np.abs(decode(single.image) - decode(res.image)).mean() < 0.5


def test_bad_garment_fails_only_its_job(runner: TryOnRunner) -> None:
    p = to_bytes(make_person(128, 160).image)
    out = runner.run_batch([TryOnJob(p, b"GIF89a...."), TryOnJob(p, to_bytes(make_garment(64, 64)))])
    assert isinstance(out[0], ImageError) and out[0].error_type == "unsupported_format"
    assert isinstance(out[1], TryOnResult)
    with pytest.raises(UnsupportedFormatError):
        runner.run_one(b"nope", p)


def test_threads_share_one_session_and_io_threads(runner: TryOnRunner) -> None:
    job = TryOnJob(to_bytes(make_person(200, 260, seed=3).image), to_bytes(make_garment(128, 128)))
    expected = runner.run_one(job.person, job.cloth).image
    outputs: list[bytes] = []

    def work() -> None:
        outputs.append(runner.run_one(job.person, job.cloth).image)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outputs == [expected] * 4
    pooled = TryOnRunner(intra_op_threads=1, max_batch=4, io_threads=2)
    res = pooled.run_batch([job] * 3)
    pooled.close()
    assert all(isinstance(r, TryOnResult) and r.image == expected for r in res)


def test_thread_settings_and_providers() -> None:
    assert default_intra_op_threads(processes=4, cores=8) == 2
    assert default_intra_op_threads(processes=3, cores=2) == 1
    r = TryOnRunner("null", intra_op_threads=1, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert r.providers[-1] == "CPUExecutionProvider"
    assert r.intra_op_threads == 1


def test_runner_import_does_not_load_onnxruntime() -> None:
    code = (
        "import sys, imaging, modelkit.samples, models, models.contract, models.registry, models.pipeline, "
        "models.runner, models.stages, modelkit.cli, modelkit.bench, modelkit.checks\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
        "import imaging; assert 'onnx' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_build_is_deterministic_and_matches_committed_artefacts() -> None:
    for stem, model in build.shipped_models().items():
        data = build.model_bytes(model)
        assert data == build.model_bytes(build.shipped_models()[stem])
        committed = (ARTEFACTS / f"{stem}.onnx").read_bytes()
        assert data == committed, f"{stem}.onnx differs from a fresh build: run python -m modelkit.build"
        assert len(data) < 1_000_000
        assert model.ir_version == build.IR_VERSION
        assert [(o.domain, o.version) for o in model.opset_import] == [("", build.OPSET)]


def test_cli_tryon_writes_result_and_composite(tmp_path: Path) -> None:
    out, comp = tmp_path / "r.jpg", tmp_path / "c.png"
    assert cli_main(["tryon", "-o", str(out), "--compose", str(comp), "--threads", "1"]) == 0
    assert decode_image(out.read_bytes(), max_pixels=MAX).format == "JPEG"
    assert decode_image(comp.read_bytes(), max_pixels=MAX).width > 1000


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["--model", "tryon-fit"], 3, "model_contract: model tryon-fit needs person_mask, pose_keypoints"),
        (["--model", "no-such-model"], 3, "model_contract: no model named 'no-such-model'"),
        (["tests/data/photos/coffee.jpg", "tests/data/photos/cat.jpg"], 4, "no_person: no person found"),
    ],
)
def test_cli_tryon_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str],
    code: int, text: str,
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["tryon", *argv, "-o", str(tmp_path / "r.jpg"), "--threads", "1"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("stayler tryon: ") and text in err
    assert not (tmp_path / "r.jpg").exists()


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--images", "2", "--batch", "2", "--rounds", "1", "--threads", "1",
                     "--person-size", "192x256", "--garment-size", "128x128"]) == 0
    text = capsys.readouterr().out
    assert "bare onnxruntime, batch 1" in text and "runner, batch 2" in text
    assert "person stage alone, batch 2" in text


def test_results_carry_a_thumbnail_made_from_the_rendered_image() -> None:
    import io

    from PIL import Image

    from modelkit.samples import sample_pair
    from models.runner import TryOnRunner

    person, cloth = sample_pair(1)
    result = TryOnRunner("null", thumbnail_size=32, intra_op_threads=1).run_one(person, cloth)
    assert result.thumbnail is not None
    thumb = Image.open(io.BytesIO(result.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 32
    assert thumb.size[0] / thumb.size[1] == pytest.approx(result.width / result.height, rel=0.05)
    assert TryOnRunner("null", intra_op_threads=1).run_one(person, cloth).thumbnail is None
