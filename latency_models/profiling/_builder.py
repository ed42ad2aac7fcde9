"""Building ONNX graphs with ``onnx.helper`` (no torch), and their int8 QDQ form.

:class:`_Builder` accumulates the nodes and initializers of one graph: convs with their
usual neighbours (BatchNorm, ReLU or ReLU6), linears, any other node. :func:`quantize_qdq`
turns an fp32 graph into an int8 QDQ graph (static quantization through
``onnxruntime.quantization``: uint8 activations, per-channel int8 weights, the pipeline that
gave real integer kernels in FIELD-NOTES.md).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

OPSET = 17


@dataclass
class _Builder:
    """Accumulates nodes and initializers of one graph."""

    rng: np.random.Generator
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bn: bool = True,
        act: str | None = "Relu",
    ) -> str:
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, (2.0 / fan_in) ** 0.5, (cout, cin // groups, k, k))
        inputs = [x, self.const("w", w)]
        if not bn:
            inputs.append(self.const("b", self.rng.normal(0, 0.01, cout)))
        y = self.node(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
            pads=[k // 2] * 4, group=groups,
        )  # fmt: skip
        if bn:
            y = self.node(
                "BatchNormalization",
                [
                    y,
                    self.const("g", 1 + 0.1 * self.rng.normal(size=cout)),
                    self.const("beta", 0.1 * self.rng.normal(size=cout)),
                    self.const("mean", 0.1 * self.rng.normal(size=cout)),
                    self.const("var", 1 + 0.1 * self.rng.random(cout)),
                ],
            )
        if act == "Relu":
            y = self.node("Relu", [y])
        elif act == "Relu6":
            y = self.node(
                "Clip", [y, self.const("lo", np.array(0.0)), self.const("hi", np.array(6.0))]
            )
        return y

    def linear(self, x: str, fin: int, fout: int) -> str:
        w = self.rng.normal(0, (1.0 / fin) ** 0.5, (fout, fin))
        b = self.rng.normal(0, 0.01, fout)
        return self.node("Gemm", [x, self.const("w", w), self.const("b", b)], transB=1)

    def model(self, x_shape: Sequence[int], y: str, name: str) -> onnx.ModelProto:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model


def quantize_qdq(
    graph: onnx.ModelProto,
    *,
    nodes_to_exclude: Sequence[str] = (),
    n_calibration: int = 4,
    seed: int = 0,
) -> onnx.ModelProto:
    """Static int8 QDQ quantization of an fp32 graph with random calibration data.

    uint8 activations, per-channel int8 weights, QDQ format (onnxruntime then runs
    ``QLinearConv``/``QGemm`` kernels).

    Args:
        graph: fp32 graph with static input shapes.
        nodes_to_exclude: Node names to keep in fp32 (mixed precision).
        n_calibration: Random calibration samples.
        seed: Calibration data seed.

    Returns:
        The QDQ ModelProto.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(seed)
    shapes = {
        inp.name: [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        for inp in graph.graph.input
    }
    data = [
        {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in range(n_calibration)
    ]

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        dst = Path(tmp) / "int8.onnx"
        onnx.save(graph, str(src))
        # Folds BatchNorm into the convs first, as a real export pipeline does.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
        )
        return onnx.load(str(dst))


def _conv_macs(op: str, cin: int, cout: int, size: int, kernel: int, stride: int) -> float:
    """MACs of one conv (``op`` as in ``kernel_graph``) on a ``size`` x ``size`` input."""
    out = math.ceil(size / stride) ** 2
    if op == "dwconv":
        return float(out * cin * kernel * kernel)
    return float(out * cin * cout * kernel * kernel)
