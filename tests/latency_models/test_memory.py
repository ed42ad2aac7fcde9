from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from latency_models import (
    memory_footprint,
    quantize_qdq,
    random_network,
)


def test_peak_activation_matches_hand_count() -> None:
    # x(1x4x8x8) -> conv a(1x8x8x8) -> relu b -> conv c(1x2x8x8), plus a skip: d = c + y2
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["c"]),
        helper.make_node("Add", ["c", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp = memory_footprint(model)
    x, a, b, c, y = 4 * 64 * 4, 8 * 64 * 4, 8 * 64 * 4, 4 * 64 * 4, 4 * 64 * 4
    # conv1: x + a live; relu: x + a + b (a freed after); conv2: x + b + c; add: x + c + y
    assert fp.peak_activation_bytes == max(x + a, x + a + b, x + b + c, x + c + y)
    assert fp.weight_bytes == (8 * 4 * 9 + 4 * 8) * 4
    assert fp.total_bytes == fp.weight_bytes + fp.peak_activation_bytes


def test_int8_weights_are_about_a_quarter() -> None:
    fp32 = random_network(1, size=32, width=32)
    int8 = quantize_qdq(fp32)
    w32 = memory_footprint(fp32).weight_bytes
    w8 = memory_footprint(int8).weight_bytes
    # BatchNorm folds into the convs before quantization; scales/zero points add a little
    assert 0.2 < w8 / w32 < 0.35


def test_int8_activations_count_one_byte_and_weight_dequant_is_not_an_activation() -> None:
    # In a QDQ graph the weights' DequantizeLinear outputs are folded into the integer
    # kernels, and activations between int8 kernels are uint8: the int8 twin's peak must be
    # well below the fp32 one (it was larger before, counting dequantized weights).
    fp32 = random_network(3, size=32, width=32)
    int8 = quantize_qdq(fp32)
    peak32 = memory_footprint(fp32).peak_activation_bytes
    peak8 = memory_footprint(int8).peak_activation_bytes
    assert peak8 < 0.6 * peak32
