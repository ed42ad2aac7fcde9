"""Bit-widths per layer: static int8 QDQ (per channel) and weight-only int4, in the ONNX graph.

Config key ``bits`` (layer -> 32, 8 or 4); parameters ``bits.<layer>``. The torch model is left
as it is; the export hook quantizes the exported graph with onnxruntime's quantizer.

The TorchScript exporter's constant folding puts deduplicated initializers behind
``Identity`` nodes, which kept half of a ResNet-18's convs out of ``QLinearConv``;
``quant_pre_process`` runs onnxruntime's optimizer, which removes them, after which all 20
convs became ``QLinearConv`` (checked in the tests on the optimized graph).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from search_spaces._onnx import INPUT_NAME, layer_nodes
from search_spaces.kinds._base import (
    ApplyContext,
    CompressionKind,
    ExportContext,
    SpaceContext,
    format_choices,
    register_kind,
    table,
)

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import onnx

_logger = logging.getLogger(__name__)
SUPPORTED_BITS = (32, 8, 4)


@register_kind
class BitsKind(CompressionKind):
    """Quantizable layers with their bit-widths: 32 and 8 for Conv2d/Linear, 4 for Linear."""

    name = "bits"
    key = "bits"
    order = 400
    summary_order = 250
    label = "quantizable"
    builtin = True
    may_run_slower = True

    @classmethod
    def from_json(cls, data: Any) -> Any:
        return cls.freeze({k: int(v) for k, v in data.items()})

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        bits = space.bits
        bad = [b for b in bits if b not in SUPPORTED_BITS]
        if bad or 32 not in bits:
            raise ValueError(
                f"bits must be a subset of {list(SUPPORTED_BITS)} containing 32, got "
                f"{list(bits)}. Use bits=(32, 8) for fp32 and int8."
            )
        out = {}
        for path in space.trace.layer_macs:
            linear = isinstance(space.model.get_submodule(path), nn.Linear)
            choices = tuple(b for b in bits if b != 4 or linear)
            if len(choices) > 1:
                out[path] = choices
        return out

    def base_choice(self, point: str) -> int:
        return 32

    def smallest(self) -> dict[str, int]:
        return {k: min(c) for k, c in self.choices.items()}

    def apply(self, model: nn.Module, value: Mapping[str, int], ctx: ApplyContext) -> nn.Module:
        return model

    @classmethod
    def export(cls, value: Mapping[str, int], graph: Path, ctx: ExportContext) -> Path | None:
        """Quantize the layers below 32 bits; None when every layer stays fp32."""
        bits = dict(value)
        if all(b == 32 for b in bits.values()):
            return None
        out = ctx.workdir / "quantized.onnx"
        _quantize(graph, out, bits, ctx)
        return out

    def summary(self, value: Mapping[str, int]) -> list[str]:
        int8 = sum(1 for b in value.values() if b == 8)
        int4 = sum(1 for b in value.values() if b == 4)
        return [f"{int8}/{len(self.choices)} layers int8"] + ([f"{int4} int4"] if int4 else [])

    def describe(self) -> list[str]:
        rows = [(k, format_choices(c)) for k, c in self.choices.items()]
        return table(("quantizable layer", "bits"), rows)


def _batches(
    calibration: torch.Tensor | Iterable[torch.Tensor] | None,
    example_input: torch.Tensor,
) -> Iterator[np.ndarray]:
    if calibration is None:
        _logger.warning(
            "no calibration data given: calibrating int8 on the example input only; pass "
            "calibration=<a batch of real inputs> for accurate scales"
        )
        calibration = example_input
    batches = [calibration] if isinstance(calibration, torch.Tensor) else calibration
    step = example_input.shape[0]
    for batch in batches:
        for start in range(0, batch.shape[0] - step + 1, step):
            yield batch[start : start + step].detach().float().numpy()


def _reader(batches: Iterator[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return _Reader()


def _gemm_to_matmul(model: onnx.ModelProto, names: set[str]) -> dict[str, str]:
    """Rewrite the named Gemm nodes (y = x W^T + b) as MatMul + Add; returns old -> MatMul name."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, renamed = [], {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.name not in names or node.op_type != "Gemm" or attrs.get("transA", 0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]) * attrs.get("alpha", 1.0)
        weight = weight.T if attrs.get("transB", 0) else weight
        scope = node.name.rsplit("/", 1)[0]
        w_name = f"{scope.strip('/').replace('/', '.')}.matmul_weight"
        model.graph.initializer.append(numpy_helper.from_array(weight.copy(), w_name))
        mm_out = node.output[0] if len(node.input) < 3 else f"{scope}/MatMul_output_0"
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], w_name], [mm_out],
                                           name=f"{scope}/MatMul"))  # fmt: skip
        if len(node.input) > 2:
            nodes.append(onnx.helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                               name=f"{scope}/Add"))  # fmt: skip
        renamed[node.name] = f"{scope}/MatMul"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return renamed


def _quantize_int4(model: onnx.ModelProto, matmuls: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(
        model, bits=4, block_size=32, is_symmetric=False, accuracy_level=4,
        nodes_to_include=matmuls,
    )  # fmt: skip
    quant.process()
    result: onnx.ModelProto = quant.model.model
    return result


def _int8_glue(graph: onnx.GraphProto, layer_nodes: set[str], int8: set[str]) -> set[str]:
    """Non-layer nodes (Add, pools, Relu, Concat...) whose nearest layers are all int8.

    Only those are quantized: onnxruntime quantizes a float-weight Conv by itself when it sits
    between DequantizeLinear and QuantizeLinear, so glue next to an fp32 layer stays fp32.
    """
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def neighbours(node: onnx.NodeProto, up: bool, seen: set[str]) -> set[str]:
        found: set[str] = set()
        edges = [producer[i] for i in node.input if i in producer] if up else [
            c for o in node.output for c in consumers.get(o, [])]  # fmt: skip
        for nxt in edges:
            if nxt.name in layer_nodes:
                found.add(nxt.name)
            elif nxt.name not in seen:
                seen.add(nxt.name)
                found |= neighbours(nxt, up, seen)
        return found

    return {
        n.name
        for n in graph.node
        if n.name not in layer_nodes
        and (neighbours(n, True, set()) | neighbours(n, False, set())) <= int8
    }


def _by_bits(nodes: Mapping[str, list[str]], bits: Mapping[str, int], want: int) -> list[str]:
    return [n for layer, names in nodes.items() if bits.get(layer, 32) == want for n in names]


def _quantize(fp32: Path, path: Path, bits: dict[str, int], ctx: ExportContext) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp, model = ctx.workdir, ctx.model
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    proto = onnx.load(str(pre))
    nodes = layer_nodes(proto.graph, model, bits)
    int4 = _gemm_to_matmul(proto, set(_by_bits(nodes, bits, 4)))
    if _by_bits(nodes, bits, 8):
        onnx.save(proto, str(pre))
        current = layer_nodes(proto.graph, model, bits)
        int8 = set(_by_bits(current, bits, 8))
        glue = _int8_glue(proto.graph, {n for names in current.values() for n in names}, int8)
        quantize_static(
            str(pre), str(tmp / "int8.onnx"),
            _reader(_batches(ctx.calibration, ctx.example_input)),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_quantize=sorted(int8 | glue),
        )  # fmt: skip
        proto = onnx.load(str(tmp / "int8.onnx"))
    if int4:
        proto = _quantize_int4(proto, list(int4.values()))
    onnx.save(proto, str(path))
