from __future__ import annotations

import time
from pathlib import Path

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
    staged_network,
    sweep_graphs,
)
from latency_models.profiling._builder import _Builder


def _conv_bn_relu() -> onnx.ModelProto:
    return kernel_graph("conv", cin=8, cout=16, size=8, kernel=3, bn=True, act="Relu")


@pytest.mark.parametrize("block", [16, 8])
def test_conv_bn_relu_is_one_fused_kernel(block: int) -> None:
    f = graph_features(_conv_bn_relu(), nchwc_block=block)
    assert f.totals["nchwc_block"] == block
    # the NCHWc conv writes blocked output; onnxruntime reorders it back for the graph output;
    # its 8 input channels are less than an AVX-512 block (read NCHW), a whole AVX2 one
    layout_in = ["ReorderInput"] if block == 8 else []
    assert [k.op for k in f.kernels] == [*layout_in, "FusedConv", "ReorderOutput"]
    out = f.kernels[-1]
    assert out.kind == "layout" and out.activation_bytes == 2 * 16 * 8 * 8 * 4
    k = f.kernels[-2]
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
    (fp32,) = [k for k in graph_features(_conv_bn_relu()).kernels if k.kind == "conv"]
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
    # onnxruntime 1.32's optimised graph: the residual operand x is NCHW (graph input), so
    # the Add is not fused into the NCHWc conv.
    assert [k.op for k in f.kernels] == [
        "ReorderInput", "FusedConv", "Conv", "ReorderOutput", "Add", "Relu",
    ]  # fmt: skip
    assert f.kernels[1].fused == ("Relu",) and f.kernels[1].kind == "dwconv"
    assert f.kernels[1].macs == 16 * 8 * 8 * 9
    assert f.totals["n_kernels"] == 6


def test_residual_add_fuses_when_both_operands_are_nchwc() -> None:
    b = _Builder(np.random.default_rng(0))
    x = b.conv("input", 16, 16, 3)
    z = b.conv(x, 16, 16, 3, act=None)
    y = b.node("Relu", [b.node("Add", [x, z])])
    f = graph_features(b.model([1, 16, 8, 8], y, "res"))
    assert [k.op for k in f.kernels] == ["ReorderInput", "FusedConv", "FusedConv", "ReorderOutput"]
    assert f.kernels[2].fused == ("BatchNormalization", "Add", "Relu")


def _ort_kernels(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rename = {"FusedConv": "Conv", "NhwcMaxPool": "MaxPool", "FusedGemm": "Gemm"}
    return sorted(
        rename.get(n.op_type, n.op_type) for n in onnx.load(so.optimized_model_filepath).graph.node
    )


@pytest.mark.parametrize("precision", ["fp32", "int8", "mixed"])
def test_kernels_match_onnxruntime_optimised_graph(precision: str, tmp_path: Path) -> None:
    g = random_network(5, size=32)
    if precision == "int8":
        g = quantize_qdq(g)
    elif precision == "mixed":  # convs left out still run as integer between Q/DQ pairs
        convs = [n.name for n in g.graph.node if n.op_type == "Conv"]
        g = quantize_qdq(g, nodes_to_exclude=convs[::2])
    ours = sorted({"FusedConv": "Conv"}.get(k.op, k.op) for k in graph_features(g).kernels)
    assert ours == _ort_kernels(g, tmp_path)


def test_reorders_after_the_outputs_follow_the_graphs_output_order() -> None:
    # several NCHWc outputs each need a ReorderOutput at the end; they used to come in a
    # set's order, which changes with the process's hash seed
    b = _Builder(np.random.default_rng(0))
    outs = [b.conv("input", 16, c, 3) for c in (16, 32, 48, 64, 80, 96)]
    model = b.model([1, 16, 8, 8], outs[0], "many_outputs")
    model.graph.output.extend(
        helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in outs[1:]
    )
    tail = [k for k in graph_features(model).kernels if k.op == "ReorderOutput"]
    assert [k.out_channels for k in tail] == [16, 32, 48, 64, 80, 96]


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


def test_quantize_qdq_calibrates_every_input() -> None:
    """Two convs on two graph inputs: both become integer kernels (each input calibrated)."""
    b = _Builder(np.random.default_rng(0))
    y1 = b.conv("input", 8, 16, 3)
    y2 = b.conv("input_1", 4, 8, 1)
    graph = helper.make_graph(
        b.nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 8, 8]),
            helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 4, 6, 6]),
        ],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in (y1, y2)],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feats = graph_features(quantize_qdq(model))
    convs = [k for k in feats.kernels if k.source_op == "Conv"]
    assert len(convs) == 2 and all(k.dtype == "int8" for k in convs)


@pytest.mark.parametrize(
    ("block", "seed", "precision"),
    [
        ("basic", 3, "fp32"), ("bottleneck", 4, "fp32"), ("inverted", 3, "fp32"),
        ("plain", 3, "fp32"), ("separable", 3, "fp32"),
        # 34- and 51-channel convs onnxruntime cannot block: they stay NCHW and take the Add
        ("bottleneck", 0, "fp32"),
        # int8 adds and pools fed from the fp32 side stay NCHW; shared DQs are read as int8
        ("basic", 3, "mixed"), ("bottleneck", 4, "mixed"), ("inverted", 3, "mixed"),
    ],
)  # fmt: skip
def test_staged_networks_run_and_featurize_like_onnxruntime(
    block: str, seed: int, precision: str, tmp_path: Path
) -> None:
    import onnxruntime as ort

    g = staged_network(seed, size=64, block=block, max_weight_mb=2.0)
    feats = graph_features(g)
    assert feats.totals["weight_bytes"] <= 2e6  # the width was scaled down to the cap
    assert any(k.op == "MaxPool" for k in feats.kernels) or block != "plain"
    if precision == "mixed":
        convs = [n.name for n in g.graph.node if n.op_type == "Conv"]
        g = quantize_qdq(g, nodes_to_exclude=convs[1::3] + convs[2::3])
        feats = graph_features(g)
    out = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.zeros((1, 3, 64, 64), np.float32)}
    )[0]
    assert out.shape[0] == 1 and out.shape[1] in (10, 100, 1000)
    ours = sorted({"FusedConv": "Conv"}.get(k.op, k.op) for k in feats.kernels)
    assert ours == _ort_kernels(g, tmp_path)


@pytest.mark.parametrize(
    ("cin", "cout", "groups"),
    [(12, 20, 1), (24, 27, 1), (27, 32, 1), (34, 16, 1), (20, 20, 20), (27, 27, 27),
     (32, 32, 2), (32, 32, 4)],
)  # fmt: skip
def test_conv_layout_follows_onnxruntime_channel_rules(
    cin: int, cout: int, groups: int, tmp_path: Path
) -> None:
    b = _Builder(np.random.default_rng(0))
    y = b.conv("input", cin, cout, 3, groups=groups)
    g = b.model([1, cin, 8, 8], y, "one_conv")
    kernels = graph_features(g).kernels
    ours = sorted({"FusedConv": "Conv"}.get(k.op, k.op) for k in kernels)
    theirs = _ort_kernels(g, tmp_path)
    assert ours == theirs
    if groups > 1:  # a grouped conv onnxruntime leaves NCHW is its own kind
        (conv,) = [k for k in kernels if k.source_op == "Conv"]
        assert (conv.kind == "gconv") == ("ReorderInput" not in theirs)
        assert conv.kind in (("dwconv", "gconv") if groups == cin else ("conv", "gconv"))


def test_staged_network_refuses_an_unknown_block() -> None:
    with pytest.raises(ValueError, match="block must be one of"):
        staged_network(3, block="dense")


def test_wide_sweep_pools_cover_the_quantized_nchw_pool() -> None:
    """The wide sweep's pool graphs run each of onnxruntime's three MaxPool kernels, the
    uint8 NCHW one (an fp32 conv before, an int8 one after) with 3x3 windows among them."""
    from latency_models.profiling._sweep import _wide_pool

    seen: dict[str, set[int]] = {}
    for i in range(40):
        name, g = _wide_pool(np.random.default_rng([0, i, 3]), i)
        (pool,) = [k for k in graph_features(g).kernels if k.source_op == "MaxPool"]
        seen.setdefault(f"{pool.kind}.{pool.dtype}", set()).add(pool.kernel_size[0])
        assert name.endswith(("fp32", "int8"))
    assert set(seen) == {"pool.fp32", "pool.int8", "qpool.int8"}
    assert seen["qpool.int8"] == {2, 3}
    # a sweep without int8 (a device profiled in fp32 only) gets fp32 pools only
    fp32 = list(sweep_graphs(60, wide=True, network_share=0.0, int8_share=0.0, mixed_share=0.0))
    assert any("_pool_" in name for name, _ in fp32)
    assert not any(n.op_type == "QuantizeLinear" for _, g in fp32 for n in g.graph.node)
