from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from latency_models import (
    FEATURE_VERSION,
    GraphFeatures,
    graph_features,
    kernel_graph,
    quantize_qdq,
    random_network,
)


def _conv_bn_relu() -> onnx.ModelProto:
    return kernel_graph("conv", cin=8, cout=16, size=8, kernel=3, bn=True, act="Relu")


def test_conv_bn_relu_is_one_fused_kernel() -> None:
    f = graph_features(_conv_bn_relu())
    assert len(f.kernels) == 1
    k = f.kernels[0]
    assert k.op == "FusedConv"
    assert k.kind == "conv" and k.dtype == "fp32"
    assert k.fused == ("BatchNormalization", "Relu")
    assert k.macs == 16 * 8 * 8 * 8 * 3 * 3
    assert k.weight_bytes == 16 * 8 * 3 * 3 * 4
    assert k.activation_bytes == (8 * 8 * 8 + 16 * 8 * 8) * 4
    assert (k.kernel_size, k.stride, k.groups) == ((3, 3), (1, 1), 1)
    assert f.feature_version == FEATURE_VERSION


def test_qdq_conv_is_one_int8_kernel() -> None:
    g = quantize_qdq(_conv_bn_relu())
    assert sum(n.op_type == "QuantizeLinear" for n in g.graph.node) >= 2
    f = graph_features(g)
    convs = [k for k in f.kernels if k.kind == "conv"]
    assert len(convs) == 1
    assert convs[0].op == "QLinearConv" and convs[0].dtype == "int8"
    # int8 weights: a quarter of the fp32 twin's bytes (plus the int32 bias)
    fp32 = graph_features(_conv_bn_relu()).kernels[0]
    assert convs[0].weight_bytes == pytest.approx(fp32.weight_bytes / 4, rel=0.1)
    # the quantization of the graph input and dequantization of its output remain
    assert sorted(k.op for k in f.kernels if k.kind == "quant") == [
        "DequantizeLinear",
        "QuantizeLinear",
    ]


def test_depthwise_and_residual_fusion() -> None:
    rng = np.random.default_rng(0)
    w_dw = numpy_helper.from_array(rng.normal(size=(16, 1, 3, 3)).astype(np.float32), "w_dw")
    w_pw = numpy_helper.from_array(rng.normal(size=(16, 16, 1, 1)).astype(np.float32), "w_pw")
    nodes = [
        helper.make_node("Conv", ["x", "w_dw"], ["a"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w_pw"], ["c"]),
        helper.make_node("Add", ["x", "c"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w_dw, w_pw],
    )
    f = graph_features(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [k.kind for k in f.kernels] == ["dwconv", "conv1x1"]
    assert f.kernels[1].fused == ("Add", "Relu")
    assert f.kernels[0].macs == 16 * 8 * 8 * 9
    assert f.totals["n_kernels"] == 2


def test_gemm_and_identity() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(32, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("MatMul", ["x1", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, b],
    )
    f = graph_features(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert len(f.kernels) == 1
    k = f.kernels[0]
    assert (k.op, k.kind, k.macs) == ("Gemm", "gemm", 32 * 10)
    assert k.input_shape == (1, 32)  # symbolic batch resolved to 1


def test_features_are_deterministic_json_roundtrip_and_fast() -> None:
    g = random_network(3, size=64)
    a = graph_features(g)
    b = graph_features(g.SerializeToString())
    assert a == b
    assert GraphFeatures.from_dict(a.to_dict()) == a
    start = time.perf_counter()
    for _ in range(5):
        graph_features(g)
    assert (time.perf_counter() - start) / 5 < 0.2  # tens of ms in practice


def test_old_feature_version_refused() -> None:
    d = graph_features(_conv_bn_relu()).to_dict()
    d["feature_version"] = FEATURE_VERSION + 1
    with pytest.raises(ValueError, match="Recompute them"):
        GraphFeatures.from_dict(d)


def test_invalid_graph_raises() -> None:
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        graph_features(b"definitely not onnx")


def test_unknown_op_is_bucketed_as_other() -> None:
    nodes = [helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    f = graph_features(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert f.unknown_ops == ("Einsum",)
    assert f.kernels[0].kind == "other"
