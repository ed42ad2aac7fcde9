"""What the backends read from the ONNX graph itself, where their runtime does not tell.

Needs the ``onnx`` package (imported here, lazily); only the converters and the backends
whose runtime cannot report input shapes (ncnn, TVM) call these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import ConversionError, InputSpec, RuntimeNotInstalledError

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def load_onnx(model: bytes, *, why: str) -> Any:
    """The parsed ModelProto; raises RuntimeNotInstalledError naming ``why`` without onnx."""
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeNotInstalledError(f"{why} needs the onnx package: pip install onnx") from exc
    try:
        return onnx.load_model_from_string(model)
    except Exception as exc:  # onnx raises DecodeError and others
        raise ConversionError(f"not a readable ONNX model: {exc}") from exc


def graph_io(proto: Any) -> tuple[list[InputSpec], list[tuple[str, tuple[int | None, ...]]]]:
    """Graph inputs (initializers left out) and outputs, with dims (None = dynamic)."""
    from onnx import helper

    inits = {i.name for i in proto.graph.initializer}

    def dims(value: Any) -> tuple[int | None, ...]:
        shape = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in shape)

    inputs: list[InputSpec] = []
    for value in proto.graph.input:
        if value.name in inits:
            continue
        elem = value.type.tensor_type.elem_type
        inputs.append((value.name, helper.tensor_dtype_to_np_dtype(elem), dims(value)))
    outputs = [(value.name, dims(value)) for value in proto.graph.output]
    return inputs, outputs


def has_qdq(proto: Any) -> bool:
    """Whether the graph holds QuantizeLinear/DequantizeLinear nodes (a QDQ int8 graph)."""
    return any(node.op_type in _QDQ_OPS for node in proto.graph.node)


def lower_ir_version(proto: Any, highest: int = 10) -> Any:
    """Lower the IR version to the least its opsets need when above ``highest``.

    Converters that embed an older onnxruntime (pnnx) refuse newer IR versions that
    ``onnx.helper`` writes by default, though nothing in the graph needs them.
    """
    from onnx import helper

    if proto.ir_version > highest:
        proto.ir_version = max(3, helper.find_min_ir_version_for(list(proto.opset_import)))
    return proto


def strip_qdq(proto: Any) -> tuple[Any, set[str]]:
    """An fp32 copy of a QDQ graph, and the outputs of the layers whose weights were int8.

    Weight DequantizeLinear nodes become fp32 initializers (dequantized values); each
    activation QuantizeLinear -> DequantizeLinear pair becomes an Identity (a Relu where the
    pair's zero point is its type's lowest value: quantizers drop a Relu into such a pair),
    so tensor names stay. Runtimes that quantize with their own tool (MNN) start from this graph.

    Raises:
        ConversionError: a QuantizeLinear whose output feeds anything but
            DequantizeLinear (the graph computes on int8 tensors directly).
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    weights: set[str] = set()  # names of dequantized weights
    kept = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values = _dequantize(node, inits, numpy_helper)
            graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
            weights.add(node.output[0])
        elif node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                raise ConversionError(
                    f"DequantizeLinear {node.name!r} reads {node.input[0]!r}, which no "
                    "QuantizeLinear writes; only Q->DQ pairs and int8 weights are supported."
                )
            op = "Relu" if _clips_negatives(q, inits, numpy_helper) else "Identity"
            kept.append(helper.make_node(op, [q.input[0]], [node.output[0]]))
        elif node.op_type == "QuantizeLinear":
            users = [n for n in graph.node if node.output[0] in n.input]
            if any(u.op_type != "DequantizeLinear" for u in users):
                raise ConversionError(
                    f"QuantizeLinear {node.name!r} feeds {sorted({u.op_type for u in users})}; "
                    "only QuantizeLinear -> DequantizeLinear pairs are supported."
                )
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    int8_layers = {
        n.output[0]
        for n in kept
        if n.op_type in _WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in weights
    }
    return out, int8_layers


def _clips_negatives(q: Any, inits: dict[str, Any], numpy_helper: Any) -> bool:
    """Whether a QuantizeLinear maps every negative value to its lowest code (zero point)."""
    if len(q.input) < 3 or q.input[2] not in inits:
        return False  # no zero point: int8 with zero point 0, negatives survive
    zero = numpy_helper.to_array(inits[q.input[2]])
    return bool(np.all(zero == np.iinfo(zero.dtype).min))


def _dequantize(node: Any, inits: dict[str, Any], numpy_helper: Any) -> np.ndarray:
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = (
        numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else np.zeros_like(scale)
    )
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    values: np.ndarray = ((q - zero) * scale).astype(np.float32)
    return values
