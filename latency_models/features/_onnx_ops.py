"""ONNX op families, the integer kernels onnxruntime runs them as, and shape helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

CONV_OPS = {"Conv", "ConvTranspose"}
GEMM_OPS = {"Gemm", "MatMul"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
ACT_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}
ELTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid",
    "HardSwish", "Erf", "Exp", "Log", "Sqrt", "Pow", "Neg", "Abs", "Max", "Min", "Where",
    "Gelu", "BatchNormalization", "Cast", "PRelu", "Elu", "Selu", "Softplus", "Mish",
    "Reciprocal", "Equal", "Less", "Greater", "Not", "And", "Or", "Sum", "Mean",
}  # fmt: skip
MEMORY_OPS = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Pad", "Gather", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth",
    "Shape", "Size", "ConstantOfShape",
}  # fmt: skip
REDUCE_OPS = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
    "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization",
    "GroupNormalization", "ArgMax", "ArgMin", "TopK",
}  # fmt: skip
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops whose QDQ form onnxruntime turns into one integer kernel (or runs on int8 data).
QDQ_CAPABLE = (
    CONV_OPS
    | GEMM_OPS
    | POOL_OPS
    | {"Add", "Mul", "Sigmoid", "LeakyRelu", "Softmax", "Concat", "Reshape", "Flatten"}
    | {"Squeeze", "Unsqueeze", "Transpose", "Resize", "Gather", "Slice", "Split", "Pad"}
)
QDQ_VANISH = {"Relu", "Clip"}  # Q(Relu(DQ(x))) is just a narrower quantization range
INT8_NAMES = {
    "Conv": "QLinearConv", "ConvTranspose": "QLinearConvTranspose", "Gemm": "QGemm",
    "MatMul": "QLinearMatMul", "Add": "QLinearAdd", "Mul": "QLinearMul",
    "AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool",
    "Sigmoid": "QLinearSigmoid", "LeakyRelu": "QLinearLeakyRelu", "Softmax": "QLinearSoftmax",
    "Concat": "QLinearConcat",
}  # fmt: skip
BYTES_PER_ELEM = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}


def numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def pair(values: Sequence[int], default: int = 1) -> tuple[int, int]:
    vals = list(values) or [default]
    return (int(vals[0]), int(vals[-1]))
