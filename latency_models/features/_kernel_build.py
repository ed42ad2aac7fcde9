"""One kernel's features from its ONNX node and the nodes fused into it."""

from __future__ import annotations

from typing import Any, NamedTuple

from latency_models.features._kernels import KernelFeatures
from latency_models.features._onnx_ops import (
    CONV_OPS,
    ELTWISE_OPS,
    GEMM_OPS,
    INT8_NAMES,
    MEMORY_OPS,
    POOL_OPS,
    QUANT_OPS,
    REDUCE_OPS,
    numel,
    pair,
)
from latency_models.features._tensors import GraphTensors


def build_kernel(
    t: GraphTensors,
    n: dict[str, Any],
    *,
    is_int8: bool,
    nchwc: bool,
    extra: list[dict[str, Any]],
    out: str,
) -> KernelFeatures:
    """The kernel node ``n`` runs as, with the nodes in ``extra`` fused into it.

    ``nchwc``: ``n`` is an fp32 conv onnxruntime runs blocked; ``out``: the tensor the
    kernel writes (the last fused node's output).
    """
    op: str = n["op"]
    dtype = "int8" if is_int8 else "fp32"
    acts = [i for i in n["inputs"] if i and i not in t.const]
    main_in = acts[0] if acts else (n["inputs"][0] if n["inputs"] else "")
    in_shape = t.shapes.get(main_in, ())
    out_shape = t.shapes.get(n["outputs"][0], ())
    shape = _op_shape(t, n, in_shape, out_shape, is_int8=is_int8, nchwc=nchwc)
    return KernelFeatures(
        op=_runtime_op(op, is_int8, extra),
        source_op=op,
        kind=shape.kind,
        dtype=dtype,
        input_shape=tuple(int(d) for d in in_shape),
        output_shape=tuple(int(d) for d in t.shapes.get(out, out_shape)),
        kernel_size=shape.kernel_size,
        stride=shape.stride,
        groups=shape.groups,
        in_channels=shape.cin,
        out_channels=shape.cout,
        macs=shape.macs,
        weight_bytes=_weight_bytes(t, n),
        activation_bytes=_activation_bytes(t, n, acts, extra, out, dtype),
        fused=tuple(e["op"] for e in extra),
        nodes=(n["name"], *(e["name"] for e in extra)),
    )


class _OpShape(NamedTuple):
    """What a kernel computes: its kind, MACs, channels and window."""

    kind: str
    macs: float
    cin: int
    cout: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1


def _activation_bytes(
    t: GraphTensors,
    n: dict[str, Any],
    acts: list[str],
    extra: list[dict[str, Any]],
    out: str,
    dtype: str,
) -> float:
    """Bytes of activations the kernel reads and writes, a fused Add's residual included."""
    op: str = n["op"]
    act_dtype = dtype if op not in QUANT_OPS else None
    act_bytes = sum(t.nbytes(a, act_dtype) for a in acts)
    if op == "QuantizeLinear":
        act_bytes += t.nbytes(n["outputs"][0], "int8")
    else:
        act_bytes += t.nbytes(out, act_dtype)
    for e in extra:  # residual operands read by a fused Add
        for a in e["inputs"]:
            if (
                a
                and a not in t.const
                and a not in n["outputs"]
                and a not in {o for x in extra for o in x["outputs"]}
            ):
                act_bytes += t.nbytes(a, act_dtype)
    return float(act_bytes)


def _weight_bytes(t: GraphTensors, n: dict[str, Any]) -> float:
    """Bytes of the node's constant inputs after the first: 1 an element if (u)int8, else 4."""
    weight_bytes = 0.0
    for w in n["inputs"][1:]:
        if w and w in t.const:
            per = 1 if t.const_elem.get(w) in (2, 3) else 4
            if t.const_elem.get(w) == 6:
                per = 4
            weight_bytes += numel(t.shapes.get(w, ())) * per
    return float(weight_bytes)


def _op_shape(
    t: GraphTensors,
    n: dict[str, Any],
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    *,
    is_int8: bool,
    nchwc: bool,
) -> _OpShape:
    """The kernel kind of node ``n``, its MACs, channels and window."""
    op: str = n["op"]
    attrs = n["attrs"]
    cin = int(in_shape[1]) if len(in_shape) >= 2 else (int(in_shape[-1]) if in_shape else 0)
    cout = int(out_shape[1]) if len(out_shape) >= 2 else cin
    out_numel = numel(out_shape)
    if op in CONV_OPS:
        return _conv_shape(t, n, in_shape, out_numel, cin, cout, is_int8=is_int8, nchwc=nchwc)
    if op in GEMM_OPS:
        return _gemm_shape(t, n, out_shape)
    if op in POOL_OPS:
        if op.startswith("Global"):
            return _OpShape("pool", float(numel(in_shape)), cin, cout)
        kernel_size = pair(attrs.get("kernel_shape", [1]))
        stride = pair(attrs.get("strides", [1]))
        macs = float(out_numel * kernel_size[0] * kernel_size[1])
        return _OpShape("pool", macs, cin, cout, kernel_size, stride)
    if op in QUANT_OPS:
        macs, kind = float(out_numel), "quant"
    elif op in ELTWISE_OPS:
        macs, kind = float(out_numel), "eltwise"
    elif op in MEMORY_OPS:
        macs, kind = 0.0, "memory"
    elif op in REDUCE_OPS:
        macs, kind = float(max(numel(in_shape), out_numel)), "reduce"
    else:
        macs, kind = float(max(numel(in_shape), out_numel)), "other"
    return _OpShape(kind, macs, cin, cout)


def _conv_shape(
    t: GraphTensors,
    n: dict[str, Any],
    in_shape: tuple[int, ...],
    out_numel: int,
    cin: int,
    cout: int,
    *,
    is_int8: bool,
    nchwc: bool,
) -> _OpShape:
    """A conv's kind (how onnxruntime runs it), MACs and window."""
    op: str = n["op"]
    attrs = n["attrs"]
    w_shape = t.shapes.get(n["inputs"][1], ())
    groups = int(attrs.get("group", 1))
    kernel_size = pair(w_shape[2:]) if len(w_shape) > 2 else (1, 1)
    stride = pair(attrs.get("strides", [1]))
    per_out = (numel(w_shape[1:]) if w_shape else 1) if op == "Conv" else 1
    if op == "ConvTranspose":
        per_out = numel(w_shape[2:]) * (w_shape[0] // max(groups, 1) if w_shape else 1)
        macs = float(numel(in_shape) * per_out * (w_shape[1] if w_shape else 1))
    else:
        macs = float(out_numel * per_out)
    if groups > 1 and not is_int8 and not nchwc:
        kind = "gconv"  # NCHW, group by group
    elif groups > 1 and groups == cin:
        kind = "dwconv"
    elif kernel_size == (1, 1):
        kind = "conv1x1"
    else:
        kind = "conv"
    return _OpShape(kind, macs, cin, cout, kernel_size, stride, groups)


def _gemm_shape(t: GraphTensors, n: dict[str, Any], out_shape: tuple[int, ...]) -> _OpShape:
    """A Gemm's or MatMul's MACs; its channels are the reduced and the output dimension."""
    attrs = n["attrs"]
    b_shape = t.shapes.get(n["inputs"][1], ()) if len(n["inputs"]) > 1 else ()
    if n["op"] == "Gemm":
        k_dim = int(b_shape[1] if attrs.get("transB", 0) else b_shape[0]) if b_shape else 1
    else:
        k_dim = int(b_shape[-2]) if len(b_shape) >= 2 else (int(b_shape[0]) if b_shape else 1)
    macs = float(numel(out_shape) * k_dim)
    return _OpShape("gemm", macs, k_dim, int(out_shape[-1]) if out_shape else 1)


def _runtime_op(op: str, is_int8: bool, extra: list[dict[str, Any]]) -> str:
    """The op onnxruntime names the kernel: its integer op, or the fused conv or Gemm."""
    if extra and op in CONV_OPS and not is_int8:
        return "FusedConv"
    if extra and op == "MatMul":
        return "Gemm"
    return INT8_NAMES.get(op, op) if is_int8 else op
