"""Exact memory accounting of an ONNX graph: weights at their dtype, peak live activations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from latency_models._graph import GraphLike, load_graph

if TYPE_CHECKING:
    import onnx

# onnx TensorProto.DataType -> bytes per element (4-bit types count as half a byte)
_ELEM_BYTES = {
    1: 4.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0, 6: 4.0, 7: 8.0, 9: 1.0, 10: 2.0, 11: 8.0,
    12: 4.0, 13: 8.0, 16: 2.0, 17: 1.0, 18: 1.0, 19: 1.0, 20: 1.0, 21: 0.5, 22: 0.5,
}  # fmt: skip


@dataclass(frozen=True)
class MemoryFootprint:
    """Memory a graph needs, in bytes.

    Attributes:
        weight_bytes: All initializers (and ``Constant`` nodes) at their stored dtype: an
            int8 weight counts 1 byte per element, fp32 4.
        peak_activation_bytes: Largest total size of activations alive at once while the
            nodes run in topological order (graph inputs included, weights excluded); in an
            int8 QDQ graph the activations between integer kernels count 1 byte per element,
            as in the fused kernels that run.
    """

    weight_bytes: int
    peak_activation_bytes: int

    @property
    def total_bytes(self) -> int:
        """Weights plus peak activations."""
        return self.weight_bytes + self.peak_activation_bytes

    @property
    def total_mb(self) -> float:
        """Weights plus peak activations, in MB (10^6 bytes)."""
        return self.total_bytes / 1e6


def _tensor_bytes(t: onnx.TensorProto) -> float:
    return float(math.prod(t.dims) * _ELEM_BYTES.get(t.data_type, 4.0))


def memory_footprint(graph: GraphLike, *, batch_size: int = 1) -> MemoryFootprint:
    """Weight bytes and peak activation bytes of ``graph`` by liveness analysis.

    Each node's outputs are allocated when it runs; an activation is freed after its last
    consumer ran (graph outputs live to the end). The peak is the largest sum of live
    activation sizes at any node, counted while the node runs (its inputs and outputs both
    alive). In-place reuse by the runtime is ignored, so this is an upper bound of what an
    arena-free executor needs.

    Args:
        graph: A ModelProto, ``.onnx`` path or bytes with inferable shapes.
        batch_size: Value for symbolic leading dims (other symbolic dims count as 1).

    Returns:
        The :class:`MemoryFootprint`.

    Raises:
        ValueError: ``graph`` is not valid ONNX or its shapes cannot be inferred.
    """
    import onnx
    from onnx import numpy_helper

    model = load_graph(graph)
    g = model.graph
    weights = {i.name for i in g.initializer}
    weight_bytes = sum(_tensor_bytes(i) for i in g.initializer)
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    weight_bytes += numpy_helper.to_array(a.t).nbytes
                    weights.add(node.output[0])
    # Tensors computed from weights alone (the DequantizeLinear of an int8 weight, a
    # reshaped constant) are folded or fused into the kernel by the runtime: they are
    # weights at their stored dtype, not activations.
    derived = _constant_derived(g, weights)
    weights |= derived
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception as exc:  # onnx raises InferenceError and C++ errors
        raise ValueError(f"cannot infer the shapes of this graph: {exc}") from exc
    sizes: dict[str, float] = {}
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        tt = vi.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (batch_size if i == 0 else 1)
            for i, d in enumerate(tt.shape.dim)
        ]
        sizes[vi.name] = math.prod(dims) * _ELEM_BYTES.get(tt.elem_type, 4.0)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(g.node):
        for name in node.input:
            if name and name not in weights:
                last_use[name] = idx
    outputs = {o.name for o in g.output}
    for name in _fused_qdq(g) - outputs - {i.name for i in g.input}:
        sizes[name] = 0.0
    live = {i.name for i in g.input if i.name not in weights}
    current = sum(sizes.get(n, 0.0) for n in live)
    peak = current
    for idx, node in enumerate(g.node):
        if node.op_type == "Constant" or all(o in derived for o in node.output if o):
            continue
        for name in node.output:
            if name and name not in live:
                live.add(name)
                current += sizes.get(name, 0.0)
        peak = max(peak, current)
        for name in list(live):
            if last_use.get(name, -1) <= idx and name not in outputs:
                live.discard(name)
                current -= sizes.get(name, 0.0)
    return MemoryFootprint(weight_bytes=int(weight_bytes), peak_activation_bytes=int(peak))


def _constant_derived(g: onnx.GraphProto, constants: set[str]) -> set[str]:
    """Outputs of nodes (in topological order) whose inputs are all constants."""
    known = set(constants)
    derived: set[str] = set()
    for node in g.node:
        inputs = [i for i in node.input if i]
        if node.op_type != "Constant" and inputs and all(i in known for i in inputs):
            outs = [o for o in node.output if o]
            known.update(outs)
            derived.update(outs)
    return derived


def _fused_qdq(g: onnx.GraphProto) -> set[str]:
    """Float tensors that exist only in the QDQ file, not in the integer kernels that run.

    onnxruntime fuses ``DequantizeLinear -> op -> QuantizeLinear`` into one integer kernel
    (QLinearConv, QGemm, ...) that reads and writes the 1-byte tensors: the float output of a
    DequantizeLinear, and a float tensor consumed only by QuantizeLinear, are never allocated.
    """
    consumers: dict[str, list[str]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    fused: set[str] = set()
    for node in g.node:
        for name in node.output:
            ops = consumers.get(name, [])
            if node.op_type == "DequantizeLinear" or (ops and set(ops) == {"QuantizeLinear"}):
                fused.add(name)
    return fused
