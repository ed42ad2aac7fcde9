"""One kernel's features from its ONNX node and the nodes fused into it."""

from __future__ import annotations

from typing import Any

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
    attrs = n["attrs"]
    dtype = "int8" if is_int8 else "fp32"
    acts = [i for i in n["inputs"] if i and i not in t.const]
    main_in = acts[0] if acts else (n["inputs"][0] if n["inputs"] else "")
    in_shape = t.shapes.get(main_in, ())
    out_shape = t.shapes.get(n["outputs"][0], ())
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
    weight_bytes = 0.0
    for w in n["inputs"][1:]:
        if w and w in t.const:
            per = 1 if t.const_elem.get(w) in (2, 3) else 4
            if t.const_elem.get(w) == 6:
                per = 4
            weight_bytes += numel(t.shapes.get(w, ())) * per
    kernel_size, stride, groups = (1, 1), (1, 1), 1
    cin = int(in_shape[1]) if len(in_shape) >= 2 else (int(in_shape[-1]) if in_shape else 0)
    cout = int(out_shape[1]) if len(out_shape) >= 2 else cin
    out_numel = numel(out_shape)
    macs: float
    if op in CONV_OPS:
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
    elif op in GEMM_OPS:
        b_shape = t.shapes.get(n["inputs"][1], ()) if len(n["inputs"]) > 1 else ()
        if op == "Gemm":
            k_dim = int(b_shape[1] if attrs.get("transB", 0) else b_shape[0]) if b_shape else 1
        else:
            k_dim = int(b_shape[-2]) if len(b_shape) >= 2 else (int(b_shape[0]) if b_shape else 1)
        macs = float(out_numel * k_dim)
        cin, cout = k_dim, int(out_shape[-1]) if out_shape else 1
        kind = "gemm"
    elif op in POOL_OPS:
        if op.startswith("Global"):
            macs = float(numel(in_shape))
        else:
            kernel_size = pair(attrs.get("kernel_shape", [1]))
            stride = pair(attrs.get("strides", [1]))
            macs = float(out_numel * kernel_size[0] * kernel_size[1])
        kind = "pool"
    elif op in QUANT_OPS:
        macs, kind = float(out_numel), "quant"
    elif op in ELTWISE_OPS:
        macs, kind = float(out_numel), "eltwise"
    elif op in MEMORY_OPS:
        macs, kind = 0.0, "memory"
    elif op in REDUCE_OPS:
        macs, kind = float(max(numel(in_shape), out_numel)), "reduce"
    else:
        macs, kind = float(max(numel(in_shape), out_numel)), "other"
    runtime_op = INT8_NAMES.get(op, op) if is_int8 else op
    if extra and op in CONV_OPS and not is_int8:
        runtime_op = "FusedConv"
    elif extra and op == "MatMul":
        runtime_op = "Gemm"
    return KernelFeatures(
        op=runtime_op,
        source_op=op,
        kind=kind,
        dtype=dtype,
        input_shape=tuple(int(d) for d in in_shape),
        output_shape=tuple(int(d) for d in t.shapes.get(out, out_shape)),
        kernel_size=kernel_size,
        stride=stride,
        groups=groups,
        in_channels=cin,
        out_channels=cout,
        macs=macs,
        weight_bytes=float(weight_bytes),
        activation_bytes=float(act_bytes),
        fused=tuple(e["op"] for e in extra),
        nodes=(n["name"], *(e["name"] for e in extra)),
    )
