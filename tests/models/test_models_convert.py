"""The conversion script's graph surgery, on tiny graphs (no tf2onnx needed)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modelkit import convert


def run(graph: onnx.GraphProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", convert.OPSET)])
    model.ir_version = convert.IR_VERSION
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_transpose_conv_bias_becomes_conv_transpose_with_the_same_result() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 2, 2, 16)).astype(np.float32)  # TFLite OHWI
    bias = np.array([0.25], dtype=np.float32)
    x = rng.normal(size=(1, 16, 4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
         helper.make_node("TFL_Convolution2DTransposeBias", ["nhwc", "w", "b"], ["y"], domain="custom")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 1])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = convert.rewrite_transpose_conv_bias(helper.make_model(graph))
    assert [n.op_type for n in model.graph.node] == ["Transpose", "ConvTranspose", "Transpose"]
    got = run(model.graph, {"x": x})[0]
    want = np.zeros((8, 8), dtype=np.float32) + bias[0]
    for kh in range(2):
        for kw in range(2):
            want[kh::2, kw::2] += np.einsum("chw,c->hw", x[0], weight[0, kh, kw])
    assert np.allclose(got[0, :, :, 0], want, atol=1e-5)


def reshape_graph(shapes: list[list[int]]) -> onnx.GraphProto:
    nodes, inits, src = [], [], "x"
    for i, shape in enumerate(shapes):
        inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"s{i}"))
        nodes.append(helper.make_node("Reshape", [src, f"s{i}"], [f"r{i}"]))
        src = f"r{i}"
    nodes.append(helper.make_node("Relu", [src], ["y"]))
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 1, 1])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)


def test_reshape_variants_tf2onnx_emits_in_different_runs_end_up_the_same() -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8, 1, 1) - 8
    variants = [reshape_graph([[-1, 8, 1, 1], [-1, 2, 4]]), reshape_graph([[-1, 8], [-1, 2, 4]]),
                reshape_graph([[-1, 2, 4]])]
    outputs, shapes = [], []
    for graph in variants:
        before = run(graph, {"x": x})[0]
        graph = convert._prune(convert._collapse_reshapes(convert._drop_noop_reshapes(graph)))
        outputs.append(run(graph, {"x": x})[0])
        assert np.array_equal(before, outputs[-1])
        shapes.append([numpy_helper.to_array(i).tolist() for i in graph.initializer])
        assert [n.op_type for n in graph.node] == ["Reshape", "Relu"]
    assert shapes[0] == shapes[1] == shapes[2] == [[-1, 2, 4]]


def test_batch_axis_becomes_symbolic_and_weights_are_stored_as_exact_halves() -> None:
    weight = np.array([0.5, -1.25, 3.0] * 40, dtype=np.float32)  # exactly representable in float16
    odd = np.full(120, 0.1, dtype=np.float32)  # 0.1 is not: stays float32
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Mul", ["r", "w"], ["m"]),
         helper.make_node("Add", ["m", "o"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 120])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 120])],
        initializer=[numpy_helper.from_array(np.array([1, 120], dtype=np.int64), "shape"),
                     numpy_helper.from_array(weight, "w"), numpy_helper.from_array(odd, "o")],
    )
    model = convert.make_batch_dynamic(helper.make_model(graph))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    half = convert._store_half(model.graph)
    kinds = {i.name: i.data_type for i in half.initializer}
    assert kinds == {"shape": TensorProto.INT64, "w__f16": TensorProto.FLOAT16, "o": TensorProto.FLOAT}
    x = np.ones((3, 120), dtype=np.float32)
    assert np.allclose(run(half, {"x": x})[0], x * weight + odd)
