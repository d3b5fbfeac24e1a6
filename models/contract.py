"""The try-on model contract: a manifest per model, and the check of a graph against it.

A manifest lives either beside the model as ``<model>.manifest.json`` or inside the ONNX file's
``metadata_props`` under ``stayler.manifest``; exactly one of the two (two sources of truth are
refused). The shipped models embed theirs; a real exported model can use a side-car file.

This module imports neither onnx nor onnxruntime at module level: the graph check works on plain
``TensorInfo`` records, built from an onnxruntime session (the runner) or from the ONNX proto
(:func:`verify_model`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_KEY = "stayler.manifest"
SIDECAR_SUFFIX = ".manifest.json"
IMAGE_ROLES = ("person", "cloth", "cloth_mask")
# Inputs a person stage produces for the try-on stage behind it (see models/stages.py).
PERSON_ROLES = ("person_mask", "person_parse", "pose_keypoints")
ROLES = IMAGE_ROLES + PERSON_ROLES
# What a person stage provides: the PERSON_ROLES plus a per-image score that a person was found.
PROVIDED_ROLES = (*PERSON_ROLES, "person_score")
KINDS = ("tryon", "person")
RESIZE_MODES = ("letterbox", "stretch")
PADDING_MODES = ("edge", "zero")
LAYOUTS = ("NCHW", "NKC")
# Keypoint sets by name: how many points, in which order. ``blazepose-33`` is MediaPipe's pose topology
# (0 nose, 11/12 left/right shoulder, 13/14 elbows, 15/16 wrists, 17-22 hands, 23/24 hips, ...).
KEYPOINT_FORMATS = {"blazepose-33": 33}
_DTYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}


class ModelContractError(Exception):
    """The model does not fit its manifest, or the manifest is invalid. Not transient."""

    error_type = "model_contract"
    transient = False


@dataclass(frozen=True)
class InputSpec:
    """One input: an image (NCHW, fixed height × width) or a keypoint set (NKC).

    A pixel p in 0..255 becomes ``((p / 255) * (hi - lo) + lo - mean[c]) / std[c]`` where
    ``value_range = (lo, hi)``. ``role`` says which runner data feeds it (person, cloth, cloth_mask,
    or a person stage's person_mask, person_parse, pose_keypoints); it defaults to the input's name.
    Person-stage roles arrive as produced (masks and parse maps in [0, 1] on the person input's
    canvas; keypoints N×K×3 as x, y in [0, 1] of that canvas and a visibility in [0, 1]); mean, std
    and value_range do not apply to them. ``keypoints`` names the keypoint set (``blazepose-33``).
    """

    name: str
    height: int
    width: int
    channels: int = 3
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    role: str = ""
    keypoints: str = ""

    @property
    def effective_role(self) -> str:
        """The role, defaulting to the input's name."""
        return self.role or self.name

    def tensor_shape(self) -> tuple[int, ...]:
        """The per-item shape the graph must declare: (C, H, W), or (K, 3) for keypoints."""
        if self.layout == "NKC":
            return (KEYPOINT_FORMATS.get(self.keypoints, 0), 3)
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class OutputSpec:
    """The image output, NCHW RGB, and optionally a one-channel alpha output.

    When ``alpha`` names an output, the runner composites ``result`` over the person's original
    full-resolution pixels with that alpha, so regions the model leaves alone stay sharp.
    """

    name: str
    value_range: tuple[float, float] = (0.0, 1.0)
    channels: int = 3
    alpha: str | None = None


@dataclass(frozen=True)
class ModelManifest:
    """Everything the runner needs to know to feed a model and read its output.

    ``kind`` is ``tryon`` (the default: an image ``output``) or ``person`` (a person stage: one person
    input, and ``provides`` maps each role it produces — person_mask, pose_keypoints, person_parse,
    person_score — to its output name; ``keypoints`` names its keypoint set). ``padding`` is how
    a letterboxed image fills the canvas: ``edge`` replication or ``zero``. A person stage's
    ``person_score`` below ``min_person_score`` means "no person in this photo" (``no_person``).
    """

    name: str
    version: str
    inputs: tuple[InputSpec, ...]
    output: OutputSpec | None
    dynamic_batch: bool
    opset: int
    resize: str = "letterbox"
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "tryon"
    provides: Mapping[str, str] = field(default_factory=dict)
    keypoints: str = ""
    padding: str = "edge"
    parse_classes: int = 0
    min_person_score: float = 0.5

    def input_for(self, role: str) -> InputSpec | None:
        """Return the input fed with ``role`` data, or ``None`` when the model has no such input."""
        for spec in self.inputs:
            if spec.effective_role == role:
                return spec
        return None

    @property
    def person_input(self) -> InputSpec:
        """The person input (every model has one; validated at load)."""
        spec = self.input_for("person")
        assert spec is not None  # validated by from_dict
        return spec

    @property
    def image_output(self) -> OutputSpec:
        """The image output of a try-on model (a person stage has none)."""
        if self.output is None:
            raise ModelContractError(f"model {self.name} ({self.kind} stage) has no image output")
        return self.output

    @property
    def needs(self) -> tuple[InputSpec, ...]:
        """The inputs a person stage must provide (person_mask, person_parse, pose_keypoints)."""
        return tuple(s for s in self.inputs if s.effective_role in PERSON_ROLES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, the inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["extra"] = dict(self.extra)
        data["provides"] = dict(self.provides)
        # Fields added with person stages are left out at their defaults, so the manifests (and
        # bytes) of single-stage models stay what they were before those fields existed.
        for key, default in _OPTIONAL_FIELDS.items():
            if data[key] == default:
                del data[key]
        for spec in data["inputs"]:
            if not spec["keypoints"]:
                del spec["keypoints"]
        if data["output"] is None:
            del data["output"]
        return data

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the same manifest always serialises to the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelManifest:
        """Build and validate a manifest; raises ``ModelContractError`` naming the bad field."""
        try:
            inputs = tuple(
                InputSpec(
                    name=str(i["name"]),
                    height=int(i["height"]) if i.get("layout") != "NKC" else int(i.get("height", 0)),
                    width=int(i["width"]) if i.get("layout") != "NKC" else int(i.get("width", 0)),
                    channels=int(i.get("channels", 3)),
                    dtype=str(i.get("dtype", "float32")),
                    layout=str(i.get("layout", "NCHW")),
                    value_range=_pair(i.get("value_range", (0.0, 1.0))),
                    mean=tuple(float(v) for v in i.get("mean", (0.0,) * int(i.get("channels", 3)))),
                    std=tuple(float(v) for v in i.get("std", (1.0,) * int(i.get("channels", 3)))),
                    role=str(i.get("role", "")),
                    keypoints=str(i.get("keypoints", "")),
                )
                for i in data["inputs"]
            )
            kind = str(data.get("kind", "tryon"))
            out = data["output"] if kind == "tryon" else data.get("output")
            manifest = cls(
                name=str(data["name"]),
                version=str(data["version"]),
                inputs=inputs,
                output=None if out is None else OutputSpec(
                    name=str(out["name"]),
                    value_range=_pair(out.get("value_range", (0.0, 1.0))),
                    channels=int(out.get("channels", 3)),
                    alpha=None if out.get("alpha") is None else str(out["alpha"]),
                ),
                dynamic_batch=bool(data["dynamic_batch"]),
                opset=int(data["opset"]),
                resize=str(data.get("resize", "letterbox")),
                description=str(data.get("description", "")),
                extra=dict(data.get("extra", {})),
                kind=kind,
                provides={str(k): str(v) for k, v in dict(data.get("provides", {})).items()},
                keypoints=str(data.get("keypoints", "")),
                padding=str(data.get("padding", "edge")),
                parse_classes=int(data.get("parse_classes", 0)),
                min_person_score=float(data.get("min_person_score", 0.5)),
            )
        except KeyError as exc:
            raise ModelContractError(f"manifest is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelContractError(f"manifest has a field of the wrong type: {exc}") from exc
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Check the manifest on its own (names unique, roles known, sizes positive, ...)."""
        if not self.name or not self.version:
            raise ModelContractError("manifest needs a non-empty name and version")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ModelContractError(f"manifest lists an input twice: {names}")
        roles = [i.effective_role for i in self.inputs]
        for role in roles:
            if role not in ROLES:
                raise ModelContractError(f"manifest input role {role!r} is unknown; known roles: {', '.join(ROLES)}")
        if len(set(roles)) != len(roles):
            raise ModelContractError(f"manifest feeds one role to two inputs: {roles}")
        if "person" not in roles:
            raise ModelContractError("manifest has no person input")
        if self.kind not in KINDS:
            raise ModelContractError(f"manifest kind {self.kind!r} is not one of {KINDS}")
        for spec in self.inputs:
            self._validate_input(spec)
        if self.kind == "person":
            self._validate_person_stage()
        elif self.image_output.channels != 3:
            raise ModelContractError(
                f"output {self.image_output.name!r} must have 3 channels, manifest says {self.image_output.channels}"
            )
        if self.resize not in RESIZE_MODES:
            raise ModelContractError(f"resize {self.resize!r} is not one of {RESIZE_MODES}")
        if self.padding not in PADDING_MODES:
            raise ModelContractError(f"padding {self.padding!r} is not one of {PADDING_MODES}")
        if self.opset < 7:
            raise ModelContractError(f"opset {self.opset} is too old")


    def _validate_input(self, spec: InputSpec) -> None:
        role = spec.effective_role
        want_layout = "NKC" if role == "pose_keypoints" else "NCHW"
        if spec.layout not in LAYOUTS or spec.layout != want_layout:
            raise ModelContractError(
                f"input {spec.name!r}: layout {spec.layout!r} is not supported for role {role} ({want_layout} only)"
            )
        if spec.dtype not in _DTYPES:
            raise ModelContractError(f"input {spec.name!r}: dtype {spec.dtype!r} is not one of {sorted(_DTYPES)}")
        if role == "pose_keypoints":
            if spec.keypoints not in KEYPOINT_FORMATS:
                raise ModelContractError(f"input {spec.name!r}: keypoint set {spec.keypoints!r} is unknown; "
                                         f"known: {', '.join(KEYPOINT_FORMATS)}")
            return
        if spec.height < 1 or spec.width < 1:
            raise ModelContractError(f"input {spec.name!r}: size {spec.height}x{spec.width} is not positive")
        if role in ("cloth_mask", "person_mask"):
            want_channels = 1
        elif role == "person_parse":
            want_channels = max(1, self.parse_classes)
        else:
            want_channels = 3
        if spec.channels != want_channels:
            raise ModelContractError(
                f"input {spec.name!r}: role {role} needs {want_channels} channel(s), manifest says {spec.channels}"
            )
        if role in PERSON_ROLES:
            person = self.input_for("person")
            if person is not None and (spec.height, spec.width) != (person.height, person.width):
                raise ModelContractError(
                    f"input {spec.name!r}: role {role} must have the person input's size "
                    f"{person.height}x{person.width}, manifest says {spec.height}x{spec.width}"
                )
        if len(spec.mean) != spec.channels or len(spec.std) != spec.channels or 0.0 in spec.std:
            raise ModelContractError(f"input {spec.name!r}: mean/std must have one non-zero value per channel")

    def _validate_person_stage(self) -> None:
        if [s.effective_role for s in self.inputs] != ["person"]:
            raise ModelContractError(f"person stage {self.name} must have exactly one input, the person photo")
        unknown = sorted(set(self.provides) - set(PROVIDED_ROLES))
        if unknown:
            raise ModelContractError(f"person stage {self.name} provides unknown roles {unknown}; "
                                     f"known: {', '.join(PROVIDED_ROLES)}")
        if "person_score" not in self.provides:
            raise ModelContractError(f"person stage {self.name} must provide person_score (is there a person?)")
        if "pose_keypoints" in self.provides and self.keypoints not in KEYPOINT_FORMATS:
            raise ModelContractError(f"person stage {self.name}: keypoint set {self.keypoints!r} is unknown; "
                                     f"known: {', '.join(KEYPOINT_FORMATS)}")
        if "person_parse" in self.provides and self.parse_classes < 1:
            raise ModelContractError(f"person stage {self.name} provides person_parse but no parse_classes")

    def provided_shape(self, role: str) -> tuple[int, ...]:
        """Per-item shape of a person stage's output for ``role``."""
        person = self.person_input
        if role == "pose_keypoints":
            return (KEYPOINT_FORMATS.get(self.keypoints, 0), 3)
        if role == "person_score":
            return (1,)
        channels = self.parse_classes if role == "person_parse" else 1
        return (channels, person.height, person.width)


_OPTIONAL_FIELDS: dict[str, Any] = {"kind": "tryon", "provides": {}, "keypoints": "", "padding": "edge",
                                    "parse_classes": 0, "min_person_score": 0.5}


def _pair(value: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not hi > lo:
        raise ValueError(f"value range {value!r} must have high > low")
    return (lo, hi)


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the checker sees it: dims are ints, or str/None when symbolic."""

    name: str
    dtype: str  # onnxruntime spelling, e.g. "tensor(float)"
    shape: tuple[int | str | None, ...]


def sidecar_path(model_path: Path) -> Path:
    """``model.onnx`` -> ``model.manifest.json`` beside it."""
    return model_path.with_name(model_path.stem + SIDECAR_SUFFIX)


def load_manifest(model_path: str | Path, metadata: Mapping[str, str] | None = None) -> ModelManifest:
    """Load the manifest of ``model_path`` from its side-car JSON or its ONNX ``metadata_props``.

    ``metadata`` is the model's metadata map when the caller already has it (the runner takes it
    from the onnxruntime session); otherwise the ONNX file is read with ``onnx`` to get it.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelContractError(f"model file {path} does not exist")
    if metadata is None:
        metadata = read_onnx_metadata(path)
    embedded = metadata.get(MANIFEST_KEY)
    side = sidecar_path(path)
    if side.is_file():
        if embedded is not None:
            raise ModelContractError(
                f"model {path.name} has two manifests ({side.name} and metadata_props[{MANIFEST_KEY!r}]); keep one"
            )
        text = side.read_text(encoding="utf-8")
        source = str(side)
    elif embedded is not None:
        text = embedded
        source = f"{path.name} metadata_props[{MANIFEST_KEY!r}]"
    else:
        raise ModelContractError(
            f"model {path.name} has no manifest: add {side.name} beside it or metadata_props[{MANIFEST_KEY!r}]"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelContractError(f"manifest in {source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelContractError(f"manifest in {source} must be a JSON object")
    return ModelManifest.from_dict(data)


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """Return ``metadata_props`` of an ONNX file (reads the proto with ``onnx``)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a broken file
        raise ModelContractError(f"model file {path.name} is not a readable ONNX model: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def check_graph(
    manifest: ModelManifest,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    *,
    model_opset: int | None = None,
    max_batch: int = 1,
) -> None:
    """Refuse a graph that does not match ``manifest``; the error names every mismatch found.

    Checks: missing and extra inputs, rank, dtype and per-item shape of each input (C×H×W, or K×3
    for keypoints); the output(s) by name, rank and shape (a try-on model's image and alpha, or
    each role a person stage provides); a static batch axis when ``max_batch > 1`` or when the
    manifest declares a dynamic one; the manifest's opset against the graph's.
    """
    problems: list[str] = []
    graph_inputs = {t.name: t for t in inputs}
    wanted = {s.name: s for s in manifest.inputs}
    for name in wanted.keys() - graph_inputs.keys():
        problems.append(f"input {name!r} is in the manifest but missing from the graph")
    for name in graph_inputs.keys() - wanted.keys():
        problems.append(f"input {name!r} is in the graph but not in the manifest (extra input)")
    for name in sorted(wanted.keys() & graph_inputs.keys()):
        spec, info = wanted[name], graph_inputs[name]
        problems.extend(_check_tensor(
            f"input {name!r}", info, _DTYPES[spec.dtype], spec.tensor_shape(), manifest, max_batch
        ))

    person = manifest.person_input
    graph_outputs = {t.name: t for t in outputs}
    expected_outputs: list[tuple[str, tuple[int, ...]]] = []
    if manifest.kind == "person":
        expected_outputs = [(name, manifest.provided_shape(role)) for role, name in sorted(manifest.provides.items())]
    else:
        out = manifest.image_output
        expected_outputs.append((out.name, (out.channels, person.height, person.width)))
        if out.alpha is not None:
            expected_outputs.append((out.alpha, (1, person.height, person.width)))
    for name, shape in expected_outputs:
        got = graph_outputs.get(name)
        if got is None:
            problems.append(f"output {name!r} is in the manifest but missing from the graph "
                            f"(graph outputs: {sorted(graph_outputs)})")
            continue
        problems.extend(_check_tensor(f"output {name!r}", got, "tensor(float)", shape, manifest, max_batch))
    if model_opset is not None and model_opset != manifest.opset:
        problems.append(f"opset: the manifest says {manifest.opset} but the graph imports opset {model_opset}")
    if problems:
        raise ModelContractError(f"model {manifest.name} ({manifest.version}) does not match its manifest: "
                                 + "; ".join(problems))


_AXIS_LABELS = {3: ("channels", "height", "width"), 2: ("keypoints", "values per keypoint"), 1: ("values",)}


def _check_tensor(
    what: str,
    info: TensorInfo,
    dtype: str,
    item_shape: tuple[int, ...],
    manifest: ModelManifest,
    max_batch: int,
) -> Iterable[str]:
    if info.dtype != dtype:
        yield f"{what} has dtype {info.dtype}, the manifest says {dtype}"
    rank = len(item_shape) + 1
    if len(info.shape) != rank:
        layout = "NCHW" if rank == 4 else "NKC" if rank == 3 else "N×1"
        yield f"{what} has rank {len(info.shape)} (shape {list(info.shape)}), the contract needs rank {rank} ({layout})"
        return
    batch = info.shape[0]
    static_batch = isinstance(batch, int)
    if manifest.dynamic_batch and static_batch:
        yield f"{what} has a static batch axis of {batch} but the manifest declares a dynamic one"
    if max_batch > 1 and (static_batch or not manifest.dynamic_batch):
        yield f"{what} has a static batch axis ({batch}) but batching is configured (max_batch={max_batch})"
    labels = _AXIS_LABELS.get(len(item_shape), tuple(f"axis {i}" for i in range(1, rank)))
    for axis, label, want in zip(range(1, rank), labels, item_shape, strict=True):
        got = info.shape[axis]
        if got != want:
            yield f"{what} has {label} {got}, the manifest says {want}"


def verify_model(model_path: str | Path, *, max_batch: int = 1) -> ModelManifest:
    """Check an ONNX file against its manifest using the ``onnx`` package only (no session).

    Used by the build script and by tools that must not start onnxruntime.
    """
    import onnx

    path = Path(model_path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelContractError(f"model file {path.name} is not a readable ONNX model: {exc}") from exc
    manifest = load_manifest(path, {p.key: p.value for p in proto.metadata_props})
    init_names = {i.name for i in proto.graph.initializer}
    inputs = [_info_from_value(v) for v in proto.graph.input if v.name not in init_names]
    outputs = [_info_from_value(v) for v in proto.graph.output]
    check_graph(manifest, inputs, outputs, model_opset=default_opset(proto), max_batch=max_batch)
    return manifest


def default_opset(proto: Any) -> int | None:
    """The default-domain opset an ONNX ``ModelProto`` imports."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


_ONNX_ELEM_TO_ORT = {1: "tensor(float)", 10: "tensor(float16)", 2: "tensor(uint8)", 11: "tensor(double)",
                     7: "tensor(int64)", 6: "tensor(int32)"}


def _info_from_value(value: Any) -> TensorInfo:
    tensor = value.type.tensor_type
    dims: list[int | str | None] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return TensorInfo(value.name, _ONNX_ELEM_TO_ORT.get(tensor.elem_type, f"elem({tensor.elem_type})"), tuple(dims))
