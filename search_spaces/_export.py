"""ONNX export of a compressed model: fp32, static int8 QDQ and weight-only int4 per layer.

Exporter choice: the TorchScript exporter (``dynamo=False``). On this machine it exported a
ResNet-18 in 0.27 s against 4 s (first call) / ~1 s (warm) for the dynamo exporter, and the
search exports one graph per trial. Its known flaw (FIELD-NOTES: Identity nodes from constant
folding kept half of a ResNet-18's convs out of ``QLinearConv``) comes from deduplicated
initializers behind ``Identity`` nodes; ``quant_pre_process`` runs onnxruntime's optimizer,
which removes them, after which all 20 convs became ``QLinearConv`` (checked in the tests on
the optimized graph). Its node names carry the module scope (``/layer1/layer1.0/conv1/Conv``),
which is how each layer is mapped to its nodes.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from search_spaces._config import CompressionConfig

if TYPE_CHECKING:
    import numpy as np
    import onnx

_logger = logging.getLogger(__name__)
INPUT_NAME = "input"
OPSET = 17
_LAYER_OPS = {"Conv", "Gemm", "MatMul", "Add", "MatMulNBits"}


@dataclass(frozen=True)
class ExportedGraph:
    """An exported ONNX file and how its layers map to nodes.

    Attributes:
        path: the ``.onnx`` file (one file, no external data).
        layer_nodes: layer path -> names of its ONNX nodes (Conv/Gemm/MatMul/Add/MatMulNBits).
        bits: layer path -> bit-width it was exported at.
        export_s: wall time of the whole export, in seconds.
    """

    path: Path
    layer_nodes: Mapping[str, list[str]] = field(default_factory=dict)
    bits: Mapping[str, int] = field(default_factory=dict)
    export_s: float = 0.0


def _export_fp32(model: nn.Module, example_input: torch.Tensor, path: Path) -> None:
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input,), str(path), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=["output"], do_constant_folding=True,
            )  # fmt: skip
    finally:
        model.train(was_training)


def _module_of(node_name: str, modules: set[str]) -> str:
    """Module path of a TorchScript-exported node name such as ``/layer1/layer1.0/conv1/Conv``.

    Each scope segment is a path relative to an ancestor, and may repeat that ancestor's last
    components (``/features/features.4/conv/conv.1/conv.1.0/Conv``); try the overlaps first.
    """
    path: list[str] = []
    for seg in node_name.split("/")[1:-1]:
        parts = seg.split(".")
        overlaps = [k for k in range(len(parts), 0, -1) if path[-k:] == parts[:k]]
        candidates = [path + parts[k:] for k in overlaps] + [path + parts, parts]
        path = next((c for c in candidates if ".".join(c) in modules), path)
    return ".".join(path)


def layer_nodes(
    graph: onnx.GraphProto, model: nn.Module, layers: Iterable[str]
) -> dict[str, list[str]]:
    """Map each Conv2d/Linear layer (or factorized layer) path to its ONNX node names."""
    modules = {name for name, _ in model.named_modules() if name}
    known = sorted(layers, key=len, reverse=True)
    compute = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    out: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        path = _module_of(node.name, modules)
        if path not in compute:
            continue
        layer = next((k for k in known if path == k or path.startswith(k + ".")), path)
        out.setdefault(layer, []).append(node.name)
    return out


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


def export_onnx(
    model: nn.Module,
    config: CompressionConfig,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
) -> ExportedGraph:
    """Export an applied (compressed) model to ONNX at the config's per-layer bit-widths.

    Args:
        model: the module returned by ``space.apply(base, config)``.
        config: the config it was applied with; ``config.bits`` picks each layer's precision.
        example_input: one input batch; its shape is the graph's input shape.
        path: where to write the ``.onnx`` file (one file, no external data).
        calibration: int8 calibration inputs: a tensor batch or an iterable of batches (cut
            into pieces of the example's batch size). ``None`` calibrates on the example input
            and logs a warning.

    Returns:
        The written graph with its layer -> node names map.
    """
    import onnx

    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bits = dict(config.bits)
    quantize = any(b != 32 for b in bits.values())
    with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if quantize else path
        _export_fp32(model, example_input, fp32)
        if quantize:
            _quantize(fp32, Path(tmp), path, model, bits, calibration, example_input)
    nodes = layer_nodes(onnx.load(str(path)).graph, model, bits)
    elapsed = time.perf_counter() - start
    _logger.debug("exported %s in %.2f s", path, elapsed)
    return ExportedGraph(path, nodes, bits, elapsed)


def _quantize(
    fp32: Path,
    tmp: Path,
    path: Path,
    model: nn.Module,
    bits: dict[str, int],
    calibration: torch.Tensor | Iterable[torch.Tensor] | None,
    example_input: torch.Tensor,
) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
            str(pre), str(tmp / "int8.onnx"), _reader(_batches(calibration, example_input)),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_quantize=sorted(int8 | glue),
        )  # fmt: skip
        proto = onnx.load(str(tmp / "int8.onnx"))
    if int4:
        proto = _quantize_int4(proto, list(int4.values()))
    onnx.save(proto, str(path))
