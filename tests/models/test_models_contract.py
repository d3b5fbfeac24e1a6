"""The model contract: every refusal names its mismatch; the registry resolves names and paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from modelkit.build import build_null_model, image_manifest, model_bytes
from models.contract import (
    MANIFEST_KEY,
    InputSpec,
    ModelContractError,
    ModelManifest,
    load_manifest,
    sidecar_path,
    verify_model,
)
from models.registry import (
    DEFAULT_MODEL,
    FIT_MODEL,
    GEOMETRIC_MODEL,
    NULL_MODEL,
    PERSON_MODEL,
    available_models,
    resolve_model,
    resolve_pipeline,
)
from models.runner import TryOnRunner

H, W = 32, 24


def tensor(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def write_model(
    path: Path,
    *,
    inputs: list[onnx.ValueInfoProto] | None = None,
    manifest: ModelManifest | None = None,
    batch: str | int = "N",
    opset: int = 17,
    ir_version: int = 8,
    embed: bool = True,
) -> Path:
    """A tiny model: result = Cast(person), alpha = ReduceMean(person over channels)."""
    if inputs is None:
        inputs = [tensor("person", [batch, 3, H, W]), tensor("cloth", [batch, 3, H, W]),
                  tensor("cloth_mask", [batch, 1, H, W])]
    nodes = [
        helper.make_node("Cast", ["person"], ["pf"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["pf"], ["result"]),
        helper.make_node("ReduceMean", ["pf"], ["alpha"], axes=[1], keepdims=1),
    ]
    outputs = [tensor("result", [batch, 3, H, W]), tensor("alpha", [batch, 1, H, W])]
    graph = helper.make_graph(nodes, "t", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    if manifest is None:
        manifest = image_manifest("test", "test-1", H, W)
    if embed:
        helper.set_model_props(model, {MANIFEST_KEY: manifest.to_json()})
    path.write_bytes(model_bytes(model))
    return path


def refused(path: Path, *, max_batch: int = 1) -> str:
    with pytest.raises(ModelContractError) as info:
        TryOnRunner(path, intra_op_threads=1, max_batch=max_batch)
    assert info.value.error_type == "model_contract" and info.value.transient is False
    # The same check without onnxruntime agrees (except for what only onnxruntime can tell).
    return str(info.value)


def test_valid_tiny_model_loads(tmp_path: Path) -> None:
    runner = TryOnRunner(write_model(tmp_path / "ok.onnx"), intra_op_threads=1, max_batch=4)
    assert runner.model_version == "test-1"
    assert verify_model(tmp_path / "ok.onnx", max_batch=4).name == "test"


def test_missing_input(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", inputs=[tensor("person", ["N", 3, H, W]), tensor("cloth", ["N", 3, H, W])])
    assert "input 'cloth_mask' is in the manifest but missing from the graph" in refused(path)


def test_extra_input(tmp_path: Path) -> None:
    inputs = [tensor(n, ["N", c, H, W]) for n, c in (("person", 3), ("cloth", 3), ("cloth_mask", 1), ("pose", 3))]
    msg = refused(write_model(tmp_path / "m.onnx", inputs=inputs))
    assert "input 'pose' is in the graph but not in the manifest" in msg


def test_wrong_rank(tmp_path: Path) -> None:
    inputs = [tensor("person", [3, H, W]), tensor("cloth", ["N", 3, H, W]), tensor("cloth_mask", ["N", 1, H, W])]
    msg = refused(write_model(tmp_path / "m.onnx", inputs=inputs))
    assert "input 'person' has rank 3" in msg


def test_wrong_dtype(tmp_path: Path) -> None:
    inputs = [tensor("person", ["N", 3, H, W], TensorProto.UINT8), tensor("cloth", ["N", 3, H, W]),
              tensor("cloth_mask", ["N", 1, H, W])]
    msg = refused(write_model(tmp_path / "m.onnx", inputs=inputs))
    assert "input 'person' has dtype tensor(uint8), the manifest says tensor(float)" in msg


def test_wrong_size(tmp_path: Path) -> None:
    manifest = image_manifest("test", "test-1", H * 2, W)
    msg = refused(write_model(tmp_path / "m.onnx", manifest=manifest))
    assert f"input 'person' has height {H}, the manifest says {H * 2}" in msg


def test_static_batch_refused_when_batching(tmp_path: Path) -> None:
    manifest = replace(image_manifest("test", "test-1", H, W), dynamic_batch=False)
    path = write_model(tmp_path / "m.onnx", manifest=manifest, batch=1)
    TryOnRunner(path, intra_op_threads=1, max_batch=1)  # fine without batching
    assert "static batch axis (1) but batching is configured (max_batch=4)" in refused(path, max_batch=4)


def test_static_batch_against_dynamic_manifest(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", batch=1)
    assert "static batch axis of 1 but the manifest declares a dynamic one" in refused(path)


def test_opset_onnxruntime_cannot_run(tmp_path: Path) -> None:
    manifest = image_manifest("test", "test-1", H, W, opset=99)
    path = write_model(tmp_path / "m.onnx", manifest=manifest, opset=99, ir_version=10)
    msg = refused(path)
    assert "opset 99" in msg and "onnxruntime" in msg


def test_manifest_opset_differs_from_graph(tmp_path: Path) -> None:
    manifest = image_manifest("test", "test-1", H, W, opset=18)
    msg = refused(write_model(tmp_path / "m.onnx", manifest=manifest))
    assert "opset: the manifest says 18 but the graph imports opset 17" in msg


def test_missing_output(tmp_path: Path) -> None:
    manifest = image_manifest("test", "test-1", H, W)
    manifest = replace(manifest, output=replace(manifest.image_output, name="image"))
    assert "output 'image' is in the manifest but missing from the graph" in refused(
        write_model(tmp_path / "m.onnx", manifest=manifest)
    )


def test_no_manifest_and_two_manifests(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", embed=False)
    assert "has no manifest" in refused(path)
    side = sidecar_path(path)
    side.write_text(image_manifest("side", "side-7", H, W).to_json())
    assert load_manifest(path).version == "side-7"  # a side-car manifest works for exported models
    assert TryOnRunner(path, intra_op_threads=1).model_version == "side-7"
    both = write_model(tmp_path / "b.onnx")
    sidecar_path(both).write_text(image_manifest("side", "side-7", H, W).to_json())
    assert "two manifests" in refused(both)


@pytest.mark.parametrize(
    ("patch", "text"),
    [
        ({"version": ""}, "non-empty name and version"),
        ({"inputs": []}, "no person input"),
        ({"opset": "x"}, "wrong type"),
        ({"resize": "crop"}, "resize"),
    ],
)
def test_bad_manifest_fields(tmp_path: Path, patch: dict, text: str) -> None:
    data = json.loads(image_manifest("test", "test-1", H, W).to_json())
    data.update(patch)
    path = write_model(tmp_path / "m.onnx", embed=False)
    sidecar_path(path).write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match=text):
        load_manifest(path)


def test_manifest_missing_field_and_bad_json(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", embed=False)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ModelContractError, match="not valid JSON"):
        load_manifest(path)
    data = json.loads(image_manifest("test", "test-1", H, W).to_json())
    del data["dynamic_batch"]
    sidecar_path(path).write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match="dynamic_batch"):
        load_manifest(path)


def test_unknown_role_and_mask_channels() -> None:
    base = image_manifest("test", "test-1", H, W)
    with pytest.raises(ModelContractError, match="role 'pose' is unknown"):
        replace(base, inputs=(*base.inputs, InputSpec("pose", H, W))).validate()
    bad_mask = InputSpec("cloth_mask", H, W, channels=3)
    with pytest.raises(ModelContractError, match="needs 1 channel"):
        replace(base, inputs=(base.inputs[0], base.inputs[1], bad_mask)).validate()


def test_manifest_round_trip() -> None:
    m = image_manifest("x", "x-1", 10, 8, description="d")
    assert ModelManifest.from_dict(json.loads(m.to_json())) == m


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00garbage" * 10)
    refused(path)


def test_registry(tmp_path: Path) -> None:
    assert {GEOMETRIC_MODEL, FIT_MODEL, PERSON_MODEL, NULL_MODEL} <= set(available_models())
    assert f"{PERSON_MODEL}+{FIT_MODEL}" == DEFAULT_MODEL
    assert [p.name for p in resolve_pipeline(None)] == [f"{PERSON_MODEL}.onnx", f"{FIT_MODEL}.onnx"]
    assert [p.name for p in resolve_pipeline(" null ")] == ["null.onnx"]
    with pytest.raises(ModelContractError, match="empty stage"):
        resolve_pipeline("person-mediapipe+")
    assert resolve_model(None).name == f"{FIT_MODEL}.onnx"
    assert resolve_model("null").name == "null.onnx"
    path = tmp_path / "mine.onnx"
    path.write_bytes(model_bytes(build_null_model()))
    assert resolve_model(str(path)) == path.resolve()
    with pytest.raises(ModelContractError, match="no model named 'nope'"):
        resolve_model("nope")
    with pytest.raises(ModelContractError, match="does not exist"):
        resolve_model(str(tmp_path / "absent.onnx"))
