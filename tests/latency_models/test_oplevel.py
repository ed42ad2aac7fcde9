from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from latency_models.features._oplevel import (
    OPLEVEL_FEATURES,
    FeatureError,
    oplevel_feature_dict,
    oplevel_features,
)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    rng = np.random.default_rng(len(name))
    return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)


def _conv(x: str, w: str, out: str, k: int, group: int = 1) -> onnx.NodeProto:
    pad = k // 2
    return helper.make_node(
        "Conv", [x, w], [out], name=out, kernel_shape=[k, k], pads=[pad] * 4, group=group
    )


def _model(nodes, inits, inputs=None, name="hand-built") -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _hand_built() -> onnx.ModelProto:
    """Every conv kind on an 8x8 map, plus a branch that reaches no output and a constant one."""
    nodes = [
        _conv("x", "w_reg", "c_reg", 3),  # 3 -> 8 regular
        helper.make_node("Relu", ["c_reg"], ["r1"], name="r1"),
        _conv("r1", "w_pw", "c_pw", 1),  # 8 -> 16 pointwise
        _conv("c_pw", "w_dw", "c_dw", 3, group=16),  # depthwise
        _conv("c_pw", "w_gr", "c_gr", 3, group=4),  # grouped, 4 input channels per group
        helper.make_node("Add", ["c_dw", "c_gr"], ["a1"], name="a1"),
        helper.make_node(
            "MaxPool", ["a1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Mul", ["z", "two"], ["zc"], name="const_mul"),  # constants only: dead
        helper.make_node("Add", ["p1", "zc"], ["a2"], name="a2"),
        helper.make_node("GlobalAveragePool", ["a2"], ["gp"], name="gp"),
        helper.make_node("Flatten", ["gp"], ["fl"], name="fl", axis=1),
        helper.make_node("Gemm", ["fl", "w_fc"], ["y"], name="fc", transB=1),
        _conv("x", "w_dead", "c_dead", 3),  # 3 -> 4, reaches no output: unused
        helper.make_node("Relu", ["c_dead"], ["r_dead"], name="r_dead"),
    ]
    inits = [
        _w("w_reg", 8, 3, 3, 3), _w("w_pw", 16, 8, 1, 1), _w("w_dw", 16, 1, 3, 3),
        _w("w_gr", 16, 4, 3, 3), _w("w_fc", 10, 16), _w("w_dead", 4, 3, 3, 3),
        _w("z", 1, 16, 4, 4), numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]  # fmt: skip
    return _model(nodes, inits)


def test_feature_names_are_unique_and_match_the_vector() -> None:
    assert len(set(OPLEVEL_FEATURES)) == len(OPLEVEL_FEATURES)
    vec = oplevel_features(_hand_built())
    assert vec.shape == (len(OPLEVEL_FEATURES),)
    assert vec.dtype == np.float64


def test_op_counts_of_a_hand_built_graph_are_exact() -> None:
    f = oplevel_feature_dict(_hand_built())
    expected = {
        "count_conv": 1, "count_conv_pw": 1, "count_conv_dw": 1, "count_conv_grouped": 1,
        "count_relu": 1, "count_add": 2, "count_maxpool": 1, "count_global_pool": 1,
        "count_reshape": 1, "count_gemm": 1, "count_mul": 0, "count_total": 11,
        "count_dead": 1, "count_unused": 2,
    }  # fmt: skip
    assert {k: f[k] for k in expected} == expected
    others = [k for k in OPLEVEL_FEATURES if k.startswith("count_") and k not in expected]
    assert all(f[k] == 0 for k in others)


def test_macs_match_the_conv_formula() -> None:
    f = oplevel_feature_dict(_hand_built())
    # output pixels x output channels x input channels per group x kernel area
    assert f["mmacs_conv"] * 1e6 == pytest.approx(8 * 8 * 8 * 3 * 9)
    assert f["mmacs_conv_pw"] * 1e6 == pytest.approx(8 * 8 * 16 * 8)
    assert f["mmacs_conv_dw"] * 1e6 == pytest.approx(8 * 8 * 16 * 1 * 9)
    assert f["mmacs_conv_grouped"] * 1e6 == pytest.approx(8 * 8 * 16 * 4 * 9)
    assert f["mmacs_gemm"] * 1e6 == pytest.approx(10 * 16)
    assert f["mmacs_maxpool"] * 1e6 == pytest.approx(16 * 4 * 4 * 4)
    assert f["mmacs_global_pool"] * 1e6 == pytest.approx(16 * 4 * 4)


def test_packed_macs_round_channels_up_to_the_block() -> None:
    f = oplevel_feature_dict(_hand_built())
    px = 8 * 8
    # regular 3 -> 8, pointwise 8 -> 16, depthwise 16, grouped 16 x 4 per group; dead conv out
    c4 = px * 9 * (8 * 4) + px * 16 * 8 + px * 16 * 9 + px * 16 * 4 * 9
    c8 = px * 9 * (8 * 8) + px * 16 * 8 + px * 16 * 9 + px * 16 * 8 * 9
    c16 = px * 9 * (16 * 16) + px * 16 * 16 + px * 16 * 9 + px * 16 * 16 * 9
    assert f["mmacs_conv_c4"] * 1e6 == pytest.approx(c4)
    assert f["mmacs_conv_c8"] * 1e6 == pytest.approx(c8)
    assert f["mmacs_conv_c16"] * 1e6 == pytest.approx(c16)
    plain = sum(
        f[k] for k in ("mmacs_conv", "mmacs_conv_pw", "mmacs_conv_dw", "mmacs_conv_grouped")
    )
    assert plain < f["mmacs_conv_c4"] < f["mmacs_conv_c8"] < f["mmacs_conv_c16"]
    # only the 3 -> 8 conv has a channel count that is not a multiple of 4 (its 3 inputs)
    assert f["mmacs_conv_a1"] * 1e6 == pytest.approx(px * 8 * 27)
    assert f["mmacs_conv_a4"] == 0.0


@pytest.mark.parametrize(("channels", "a1", "a4"), [(30, 1, 0), (12, 0, 1), (16, 0, 0)])
def test_alignment_features_split_the_macs_of_convs_that_fit_no_channel_block(
    channels: int, a1: int, a4: int
) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 8, 8])
    nodes = [
        _conv("x", "w", "c", 3),
        helper.make_node("GlobalAveragePool", ["c"], ["gp"], name="gp"),
        helper.make_node("Flatten", ["gp"], ["fl"], name="fl", axis=1),
        helper.make_node("Gemm", ["fl", "w_fc"], ["y"], name="fc", transB=1),
    ]
    model = _model(nodes, [_w("w", channels, channels, 3, 3), _w("w_fc", 10, channels)], [x])
    f = oplevel_feature_dict(model)
    assert f["mmacs_conv_a1"] == pytest.approx(a1 * f["mmacs_conv"])
    assert f["mmacs_conv_a4"] == pytest.approx(a4 * f["mmacs_conv"])
    assert f["mmacs_conv"] * 1e6 == pytest.approx(64 * channels * channels * 9)


def test_dead_and_unused_branches_are_counted_apart_from_the_live_graph() -> None:
    f = oplevel_feature_dict(_hand_built())
    unused_conv = 8 * 8 * 4 * 3 * 9  # depends on the input, reaches no output
    assert f["mmacs_unused"] * 1e6 == pytest.approx(unused_conv)
    assert f["mbytes_unused"] * 1e6 == pytest.approx(
        4 * (3 * 8 * 8 + 4 * 3 * 3 * 3 + 4 * 8 * 8) + 4 * 2 * (4 * 8 * 8)
    )  # the conv's input, weights and output; the relu's input and output
    assert f["mmacs_dead"] == 0.0  # the constant-only Mul has no MACs
    live = (8 * 8 * 8 * 27) + (8 * 8 * 16 * 8) + (8 * 8 * 16 * 9) + (8 * 8 * 16 * 36) + 160
    pools = 16 * 4 * 4 * 4 + 16 * 4 * 4
    assert f["mmacs_total"] * 1e6 == pytest.approx(live + pools)


def test_bytes_count_inputs_outputs_and_weights() -> None:
    f = oplevel_feature_dict(_hand_built())
    # pointwise conv: input 8x8x8, weight 16x8, output 16x8x8, float32
    assert f["mbytes_conv_pw"] * 1e6 == pytest.approx(4 * (8 * 64 + 16 * 8 + 16 * 64))
    # the live Add reads the constant Mul's output: a weight, as far as this graph goes
    assert f["mbytes_weights"] * 1e6 >= 4 * 16 * 16


def test_depth_and_width_of_the_live_graph() -> None:
    f = oplevel_feature_dict(_hand_built())
    # conv, relu, pw, {dw, grouped}, add, maxpool, add, gap, flatten, gemm
    assert f["depth"] == 10
    assert f["width"] == 2


def test_a_network_whose_output_is_cut_off_from_the_input_has_no_live_node() -> None:
    nodes = [
        _conv("x", "w_reg", "c", 3),  # input side, reaches nothing: unused
        _conv("z", "w_pw2", "zc", 1),  # constant side: decides the output
        helper.make_node("GlobalAveragePool", ["zc"], ["gp"], name="gp"),
        helper.make_node("Flatten", ["gp"], ["fl"], name="fl", axis=1),
        helper.make_node("Gemm", ["fl", "w_fc"], ["y"], name="fc", transB=1),
    ]
    inits = [_w("w_reg", 8, 3, 3, 3), _w("z", 1, 16, 4, 4), _w("w_pw2", 16, 16, 1, 1),
             _w("w_fc", 10, 16)]  # fmt: skip
    f = oplevel_feature_dict(_model(nodes, inits))
    assert f["count_total"] == 0
    assert f["mmacs_total"] == 0
    assert f["count_dead"] == 4 and f["count_unused"] == 1
    assert f["mmacs_dead"] * 1e6 == pytest.approx(16 * 16 * 16 + 16 * 16 + 160)
    assert f["mmacs_unused"] * 1e6 == pytest.approx(8 * 64 * 27)


def test_bytes_that_are_no_model_raise_naming_the_graph() -> None:
    with pytest.raises(FeatureError, match="'net-17' is not a readable ONNX model"):
        oplevel_features(b"\x08\x01garbage", name="net-17")


def test_unknown_conv_shapes_raise_naming_graph_and_node() -> None:
    model = _hand_built()
    dynamic = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])
    model.graph.input[0].CopyFrom(dynamic)
    with pytest.raises(FeatureError, match=r"graph 'hand-built'.*'c_reg' \(Conv\).*static"):
        oplevel_features(model)


def test_symbolic_batch_counts_as_one() -> None:
    model = _hand_built()
    model.graph.input[0].CopyFrom(
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    )
    np.testing.assert_allclose(oplevel_features(model), oplevel_features(_hand_built()))


def test_bytes_and_proto_give_the_same_features() -> None:
    model = _hand_built()
    np.testing.assert_array_equal(
        oplevel_features(model.SerializeToString()), oplevel_features(model)
    )
