"""Build the shipped try-on models as ONNX graphs, with no PyTorch and no download.

``python -m modelkit.build`` writes ``models/artefacts/<name>.onnx`` for each model built from code. The
build is deterministic (same bytes on every run; a test checks the committed files) and pins the
opset and IR version so older onnxruntime releases load the files too.

The geometric try-on (``tryon-geometric``) does all of its work inside the graph:

1. person/background split: background colour = per-channel median of the image border (TopK),
   person mask = colour distance from it (smoothed, sigmoid);
2. body extent from the mask's row profile: top and bottom of the body; the neck is the narrowest
   row in the upper part of the body, the shoulder line is just below it; shoulder width and the
   body's centre line come from the mask rows under the shoulder line;
3. garment mask: its alpha (``cloth_mask``) when it has one, else colour distance from the
   garment photo's border median; garment extent and hem width from that mask;
4. an affine map (scale + translation) from the person's torso to the garment, turned into a
   sampling grid (what ``AffineGrid`` computes; written out so the graph stays at opset 17) and
   applied with ``GridSample`` to the garment and its mask;
5. blend: alpha = warped garment mask × (slightly dilated) person mask × below the shoulder line,
   softened by a 3×3 blur; the garment is shaded by the person's relative luminance.

Outputs: ``result`` (the blended image) and ``alpha`` (where the garment was put); the runner
composites ``result`` over the person's full-resolution photo with ``alpha``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.contract import MANIFEST_KEY, InputSpec, ModelManifest, OutputSpec
from models.registry import ARTEFACTS, FIT_MODEL, GEOMETRIC_MODEL, NULL_MODEL

if TYPE_CHECKING:
    from modelkit.fit import FitParams

OPSET = 17
IR_VERSION = 8
PRODUCER = "stayler-models-build"
PRODUCER_VERSION = "1"

TRYON_VERSION = "tryon-geometric-1.0.0"
NULL_VERSION = "null-1.0.0"
FIT_VERSION = "tryon-fit-1.3.0"


class GraphBuilder:
    """A tiny helper over ``onnx.helper`` with deterministic, sequential tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, dtype: type[np.generic] = np.float32, hint: str = "c") -> str:
        """An initializer holding ``value``; identical constants are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            name = self._name(hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def i64(self, *values: int) -> str:
        """A 1-D int64 initializer (axes, shapes, slice bounds)."""
        return self.const(list(values), np.int64, "i")

    def op(self, op_type: str, *inputs: str, outputs: int = 1, hint: str | None = None, **attrs: Any) -> Any:
        """Append a node; returns its output name (or a list of names when ``outputs > 1``)."""
        names = [self._name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def named(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """Append a node whose output has a fixed name (graph outputs)."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    # Short arithmetic helpers; scalars become shared constants.
    def _v(self, x: str | float) -> str:
        return x if isinstance(x, str) else self.const(float(x))

    def add(self, a: str | float, b: str | float) -> str:
        """a + b."""
        return str(self.op("Add", self._v(a), self._v(b)))

    def sub(self, a: str | float, b: str | float) -> str:
        """a - b."""
        return str(self.op("Sub", self._v(a), self._v(b)))

    def mul(self, a: str | float, b: str | float) -> str:
        """a * b."""
        return str(self.op("Mul", self._v(a), self._v(b)))

    def div(self, a: str | float, b: str | float) -> str:
        """a / b."""
        return str(self.op("Div", self._v(a), self._v(b)))

    def fcmp(self, op_type: str, a: str | float, b: str | float) -> str:
        """A comparison cast to float 0/1."""
        return str(self.op("Cast", self.op(op_type, self._v(a), self._v(b)), to=TensorProto.FLOAT))

    def between(self, x: str, lo: str | float, hi: str | float) -> str:
        """1.0 where lo <= x <= hi, else 0.0."""
        return self.mul(self.fcmp("GreaterOrEqual", x, lo), self.fcmp("LessOrEqual", x, hi))

    def rsum(self, x: str, axes: Sequence[int]) -> str:
        """ReduceSum over ``axes`` with keepdims."""
        return str(self.op("ReduceSum", x, self.i64(*axes), keepdims=1))

    def rmax(self, x: str, axes: Sequence[int]) -> str:
        """ReduceMax over ``axes`` with keepdims."""
        return str(self.op("ReduceMax", x, axes=list(axes), keepdims=1))

    def rmin(self, x: str, axes: Sequence[int]) -> str:
        """ReduceMin over ``axes`` with keepdims."""
        return str(self.op("ReduceMin", x, axes=list(axes), keepdims=1))

    def wmean(self, x: str, w: str, axes: Sequence[int]) -> str:
        """Weighted mean sum(x*w)/max(sum(w), eps) over ``axes``."""
        return self.div(self.rsum(self.mul(x, w), axes), self.op("Max", self.rsum(w, axes), self.const(1e-6)))

    def first_last(self, occ: str, idx: str, axes: Sequence[int]) -> tuple[str, str]:
        """(first, last) index where the 0/1 mask ``occ`` is set."""
        big = self.mul(self.sub(1.0, occ), 1e4)
        return self.rmin(self.add(self.mul(occ, idx), big), axes), self.rmax(self.mul(occ, idx), axes)


def _border_median(g: GraphBuilder, x: str, height: int, width: int, *, bottom: bool) -> str:
    """Per-channel median of a border band, shape [N,3,1,1] (TopK picks the middle value)."""
    band = max(2, min(height, width) // 48)
    parts = [
        g.op("Slice", x, g.i64(0), g.i64(band), g.i64(2)),
        g.op("Slice", x, g.i64(0), g.i64(band), g.i64(3)),
        g.op("Slice", x, g.i64(width - band), g.i64(width), g.i64(3)),
    ]
    count = band * width + 2 * band * height
    if bottom:
        parts.append(g.op("Slice", x, g.i64(height - band), g.i64(height), g.i64(2)))
        count += band * width
    flat = g.op("Concat", *[g.op("Reshape", p, g.i64(0, 3, -1)) for p in parts], axis=2)
    k = count // 2
    values, _ = g.op("TopK", flat, g.i64(k), outputs=2, axis=2, largest=1, sorted=1)
    kth = g.op("Slice", values, g.i64(k - 1), g.i64(k), g.i64(2))
    return str(g.op("Unsqueeze", kth, g.i64(3)))


def _foreground(g: GraphBuilder, x: str, bg: str, threshold: float) -> str:
    """Soft mask [N,1,H,W] of pixels whose colour is far from ``bg`` (3×3-smoothed distance)."""
    diff = g.sub(x, bg)
    dist = g.op("Sqrt", g.rsum(g.mul(diff, diff), [1]))
    smooth = g.op("AveragePool", dist, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    # A linear ramp from threshold/2 to threshold, exactly 0 on the background (a sigmoid's tail
    # would add a small weight to every background pixel and skew the row profiles).
    ramp = g.div(g.sub(smooth, threshold / 2), threshold / 2)
    return str(g.op("Clip", ramp, g.const(0.0), g.const(1.0)))


@dataclass(frozen=True)
class TryOnParams:
    """Proportions used by the geometric try-on (fractions of body height or widths)."""

    neck_window: tuple[float, float] = (0.07, 0.30)
    shoulder_band: tuple[float, float] = (0.02, 0.06)
    torso_span: float = 0.25
    body_to_shoulder: float = 0.86  # garment hem width / person width under the shoulders
    hem_window: tuple[float, float] = (0.72, 0.92)
    collar_lift: float = 0.012  # garment top sits this fraction of body height above the shoulder line
    shading: float = 0.35


def build_tryon_graph(height: int, width: int, params: TryOnParams | None = None) -> onnx.GraphProto:
    """The geometric try-on graph for a person/cloth contract of ``height`` × ``width``."""
    p = params or TryOnParams()
    g = GraphBuilder()
    person, cloth, cloth_mask = "person", "cloth", "cloth_mask"
    rows = g.const(np.arange(height, dtype=np.float32).reshape(1, 1, height, 1) + 0.5, hint="rows")
    cols = g.const(np.arange(width, dtype=np.float32).reshape(1, 1, 1, width) + 0.5, hint="cols")

    # 1. Person / background split.
    bg = _border_median(g, person, height, width, bottom=False)
    mask_p = _foreground(g, person, bg, 0.12)

    # 2. Body extent, neck, shoulders, centre line.
    row_frac = g.div(g.rsum(mask_p, [3]), float(width))  # [N,1,H,1]
    occ = g.fcmp("Greater", row_frac, 0.02)
    found = g.rmax(occ, [2, 3])
    top, bottom = g.first_last(occ, rows, [2, 3])
    body_h = g.op("Max", g.add(g.sub(bottom, top), 1.0), g.const(1.0))
    rel = g.div(g.sub(rows, top), body_h)
    window = g.between(rel, p.neck_window[0], p.neck_window[1])
    penalised = g.add(row_frac, g.mul(g.sub(1.0, window), 1e3))
    narrowest = g.rmin(penalised, [2, 3])
    narrow = g.fcmp("LessOrEqual", penalised, g.add(g.mul(narrowest, 1.2), 0.004))
    shoulder_y = g.add(g.rmax(g.mul(narrow, rows), [2, 3]), 0.5)  # lower edge of the lowest neck row
    band = g.between(rows, g.add(shoulder_y, g.mul(body_h, p.shoulder_band[0])),
                     g.add(shoulder_y, g.mul(body_h, p.shoulder_band[1])))
    shoulder_w = g.mul(g.wmean(row_frac, band, [2, 3]), float(width))
    torso_rows = g.between(rows, shoulder_y, g.add(shoulder_y, g.mul(body_h, p.torso_span)))
    centre_x = g.wmean(g.add(g.mul(mask_p, 0.0), cols), g.mul(mask_p, torso_rows), [2, 3])

    # 3. Garment mask: alpha when given, else distance from the photo's border colour.
    bg_c = _border_median(g, cloth, height, width, bottom=True)
    colour_mask = _foreground(g, cloth, bg_c, 0.12)
    has_alpha = g.fcmp("Less", g.rmin(cloth_mask, [1, 2, 3]), 0.5)
    mask_c = g.add(g.mul(has_alpha, cloth_mask), g.mul(g.sub(1.0, has_alpha), colour_mask))
    g_cols = g.fcmp("Greater", g.div(g.rsum(mask_c, [2]), float(height)), 0.01)
    g_rows_frac = g.div(g.rsum(mask_c, [3]), float(width))
    g_rows = g.fcmp("Greater", g_rows_frac, 0.01)
    g_left, g_right = g.first_last(g_cols, cols, [2, 3])
    g_top, g_bottom = g.first_last(g_rows, rows, [2, 3])
    g_h = g.op("Max", g.add(g.sub(g_bottom, g_top), 1.0), g.const(1.0))
    hem = g.between(g.div(g.sub(rows, g_top), g_h), p.hem_window[0], p.hem_window[1])
    hem_w = g.op("Max", g.mul(g.wmean(g_rows_frac, hem, [2, 3]), float(width)), g.const(1.0))
    g_centre_x = g.div(g.add(g_left, g_right), 2.0)
    g_top_edge = g.sub(g_top, 0.5)

    # 4. Affine map person pixel -> garment pixel, as a GridSample grid (align_corners=0).
    scale = g.div(g.mul(shoulder_w, p.body_to_shoulder), hem_w)  # person px per garment px
    top_y = g.sub(shoulder_y, g.mul(body_h, p.collar_lift))
    gx = g.add(g_centre_x, g.div(g.sub(cols, centre_x), scale))
    gy = g.add(g_top_edge, g.div(g.sub(rows, top_y), scale))
    nx = g.sub(g.div(g.mul(gx, 2.0), float(width)), 1.0)
    ny = g.sub(g.div(g.mul(gy, 2.0), float(height)), 1.0)
    zero = g.mul(g.add(nx, ny), 0.0)  # [N,1,H,W] zeros, to broadcast both to full size
    grid = g.op("Transpose", g.op("Concat", g.add(nx, zero), g.add(ny, zero), axis=1), perm=[0, 2, 3, 1])
    warped = g.op("GridSample", cloth, grid, align_corners=0, mode="bilinear", padding_mode="zeros")
    warped_mask = g.op("GridSample", mask_c, grid, align_corners=0, mode="bilinear", padding_mode="zeros")

    # 5. Blend with soft edges, only on the person and below the shoulder line.
    below = g.op("Sigmoid", g.mul(g.sub(rows, shoulder_y), 1.5))
    person_grown = g.op("MaxPool", mask_p, kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    alpha_hard = g.mul(g.mul(g.mul(warped_mask, person_grown), below), found)
    alpha = g.op("AveragePool", alpha_hard, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    lum_w = g.const(np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1))
    lum = g.rsum(g.mul(person, lum_w), [1])
    lum_mean = g.wmean(lum, alpha_hard, [2, 3])
    ratio = g.div(lum, g.op("Max", lum_mean, g.const(0.05)))
    shade = g.op("Clip", g.add(g.mul(g.sub(ratio, 1.0), p.shading), 1.0), g.const(0.9), g.const(1.15))
    dressed = g.mul(warped, shade)
    blended = g.add(person, g.mul(alpha, g.sub(dressed, person)))
    g.named("Clip", [blended, g.const(0.0), g.const(1.0)], "result")
    g.named("Identity", [alpha], "alpha")

    return _graph(g, "tryon_geometric", height, width, with_alpha=True)


def build_null_graph(height: int, width: int) -> onnx.GraphProto:
    """The do-nothing model: ``result`` = person, ``alpha`` = 0, so the runner returns the input."""
    g = GraphBuilder()
    g.named("Identity", ["person"], "result")
    first = g.op("Slice", "person", g.i64(0), g.i64(1), g.i64(1))
    g.named("Mul", [first, g.const(0.0)], "alpha")
    return _graph(g, "null", height, width, with_alpha=True)


def _graph(g: GraphBuilder, name: str, height: int, width: int, *, with_alpha: bool) -> onnx.GraphProto:
    def image(n: str, c: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, height, width])

    inputs = [image("person", 3), image("cloth", 3), image("cloth_mask", 1)]
    outputs = [image("result", 3)] + ([image("alpha", 1)] if with_alpha else [])
    return helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)


def image_manifest(
    name: str, version: str, height: int, width: int, *, description: str = "", opset: int = OPSET
) -> ModelManifest:
    """The manifest of a model with the standard person/cloth/cloth_mask inputs in [0, 1]."""
    return ModelManifest(
        name=name,
        version=version,
        inputs=(
            InputSpec("person", height, width),
            InputSpec("cloth", height, width),
            InputSpec("cloth_mask", height, width, channels=1, mean=(0.0,), std=(1.0,)),
        ),
        output=OutputSpec("result", alpha="alpha"),
        dynamic_batch=True,
        opset=opset,
        resize="letterbox",
        description=description,
    )


def make_model(graph: onnx.GraphProto, manifest: ModelManifest, *, opset: int = OPSET,
               ir_version: int = IR_VERSION) -> onnx.ModelProto:
    """Wrap ``graph`` in a model with a pinned opset/IR version and the manifest embedded."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=manifest.description,
    )
    model.ir_version = ir_version
    model.model_version = 1
    helper.set_model_props(model, {MANIFEST_KEY: manifest.to_json()})
    onnx.checker.check_model(model, full_check=True)
    return model


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Deterministic serialisation of ``model``."""
    return bytes(model.SerializeToString(deterministic=True))


def build_tryon_model(height: int = 512, width: int = 384, *, name: str = GEOMETRIC_MODEL,
                      version: str = TRYON_VERSION, params: TryOnParams | None = None) -> onnx.ModelProto:
    """The geometric try-on model at a given contract size (tests build other sizes with this)."""
    manifest = image_manifest(
        name, version, height, width,
        description="Geometric try-on: person/background split, torso from the mask profile, "
                    "garment mask, affine GridSample warp, soft blend. Outputs result and alpha.",
    )
    return make_model(build_tryon_graph(height, width, params), manifest)


def build_null_model(height: int = 64, width: int = 48, *, name: str = "null",
                     version: str = NULL_VERSION) -> onnx.ModelProto:
    """The do-nothing model (identity within the contract) for measuring queue overhead."""
    manifest = image_manifest(name, version, height, width,
                              description="Identity: returns the person unchanged (alpha 0).")
    return make_model(build_null_graph(height, width), manifest)


def fit_manifest(height: int, width: int, *, name: str = FIT_MODEL, version: str = FIT_VERSION) -> ModelManifest:
    """The manifest of ``tryon-fit``: the image inputs plus a person stage's mask and keypoints."""
    base = image_manifest(name, version, height, width)
    return ModelManifest(
        name=name,
        version=version,
        inputs=(
            *base.inputs,
            InputSpec("person_mask", height, width, channels=1, mean=(0.0,), std=(1.0,)),
            InputSpec("pose_keypoints", 0, 0, layout="NKC", keypoints="blazepose-33"),
        ),
        output=base.output,
        dynamic_batch=True,
        opset=OPSET,
        resize="letterbox",
        description="Keypoint-driven try-on: the garment placed from shoulders to hips at the shoulder width, "
                    "opaque, clipped to the torso band and the person mask; head, forearms and hands kept. "
                    "Needs a person stage (person_mask, pose_keypoints blazepose-33).",
    )


def build_fit_model(height: int = 512, width: int = 384, *, name: str = FIT_MODEL,
                    version: str = FIT_VERSION, params: FitParams | None = None) -> onnx.ModelProto:
    """The ``tryon-fit`` try-on stage at a given canvas size."""
    from modelkit.fit import build_fit_graph

    return make_model(build_fit_graph(height, width, params), fit_manifest(height, width, name=name, version=version))


def shipped_models() -> dict[str, onnx.ModelProto]:
    """Every model built from graph code and shipped in ``models/artefacts``, by file stem.

    ``person-mediapipe`` is converted, not built: see ``modelkit/convert.py``.
    """
    return {GEOMETRIC_MODEL: build_tryon_model(), NULL_MODEL: build_null_model(), FIT_MODEL: build_fit_model()}


def write_model(model: onnx.ModelProto, path: Path) -> bytes:
    """Write ``model`` to ``path`` (only when the bytes differ) and return the bytes."""
    data = model_bytes(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelkit.build [--out DIR] [--check]``: build or verify the shipped models."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ARTEFACTS, help="output folder (default: models/artefacts)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a built model differs from the file on disk")
    args = parser.parse_args(argv)
    status = 0
    for stem, model in shipped_models().items():
        path = args.out / f"{stem}.onnx"
        data = model_bytes(model)
        if args.check:
            same = path.is_file() and path.read_bytes() == data
            print(f"{path}: {'up to date' if same else 'DIFFERS'} ({len(data):,} bytes)")
            status |= 0 if same else 1
        else:
            write_model(model, path)
            print(f"wrote {path} ({len(data):,} bytes, opset {OPSET}, IR {IR_VERSION})")
    return status


if __name__ == "__main__":
    sys.exit(main())
