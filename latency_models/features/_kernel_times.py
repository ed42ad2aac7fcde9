"""Line up onnxruntime's per-node profile with the kernels the features list.

:func:`~._bench.profile_kernels` returns what onnxruntime's profiler saw: one
entry per node of the optimised graph, named after the ONNX node it came from with a
suffix (``conv_45_token_22``, ``relu_4_nchwc``, ``gemm_171_DequantizeLinear``). A kernel of
:class:`~latency_models.features._features.GraphFeatures` knows the ONNX nodes it runs, so most
entries match by name; the layout kernels onnxruntime inserts (``ReorderInput``,
``Transpose``) and any renamed node match by kind and output size, in execution order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from latency_models.features._features import COMPUTE_KINDS, GraphFeatures, KernelFeatures
from latency_models.measurement._host import NCHWC_BLOCKS

_COMPUTE_FP32 = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
_COMPUTE_INT8 = {
    "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits",
}  # fmt: skip
_LAYOUT = {"ReorderInput", "ReorderOutput", "Transpose"}
_QUANT = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_MEMORY = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "QLinearConcat", "Split",
    "Slice", "Pad", "Gather", "Expand", "Tile", "Resize",
}  # fmt: skip


def runtime_bucket(op: str) -> str:
    """Coarse class of an onnxruntime kernel (``op_name`` in its profile)."""
    if op in _COMPUTE_FP32:
        return "compute.fp32"
    if op in _COMPUTE_INT8:
        return "compute.int8"
    if "Pool" in op:
        return "pool"
    if op in _LAYOUT:
        return "layout"
    if op in _QUANT:
        return "quant"
    if op in _MEMORY:
        return "memory"
    return "eltwise"


def kernel_bucket(k: KernelFeatures) -> str:
    """The :func:`runtime_bucket` a kernel of the features should match."""
    if k.kind in COMPUTE_KINDS:
        return f"compute.{k.dtype}"
    if k.kind == "layout" or k.op == "Transpose":
        return "layout"
    if k.kind == "qpool":
        return "pool"
    if k.kind in ("pool", "quant", "memory"):
        return k.kind
    return "eltwise"


def _fits(ours: Sequence[int], theirs: Sequence[int]) -> bool:
    """Same tensor up to the channel padding of the NCHWc layout (and a channels-last order)."""
    want = math.prod(ours) if ours else 1
    got = math.prod(theirs) if theirs else 1
    channels = ours[1] if len(ours) > 1 else 1
    return want <= got <= want + (want // max(channels, 1)) * (max(NCHWC_BLOCKS) - 1)


def align_kernel_times(
    features: GraphFeatures, kernel_times: Sequence[Mapping[str, Any]]
) -> list[float | None]:
    """Measured time (ms) of each kernel of ``features``, or None where no entry matched.

    Args:
        features: The graph's kernels.
        kernel_times: :attr:`Measurement.kernel_times` of the same graph.

    Returns:
        One value per kernel of ``features``, in its order.
    """
    kernels = features.kernels
    owner: dict[str, int] = {}
    for i, k in enumerate(kernels):
        for name in k.nodes:
            owner.setdefault(name, i)
    times: list[float | None] = [None] * len(kernels)
    used = [False] * len(kernel_times)
    # 1. by name: the longest "_"-separated prefix of the runtime name that is a node's name
    for j, entry in enumerate(kernel_times):
        parts = str(entry.get("name", "")).split("_")
        bucket = runtime_bucket(str(entry.get("op", "")))
        for cut in range(len(parts), 0, -1):
            hit = owner.get("_".join(parts[:cut]))
            if hit is None:
                continue
            if times[hit] is None and kernel_bucket(kernels[hit]) == bucket:
                times[hit], used[j] = float(entry["ms"]), True
            break
    # 2. the rest by kind and tensor sizes, in execution order
    for i, k in enumerate(kernels):
        if times[i] is not None:
            continue
        bucket = kernel_bucket(k)
        for j, entry in enumerate(kernel_times):
            if used[j] or runtime_bucket(str(entry.get("op", ""))) != bucket:
                continue
            if not _fits(k.output_shape, entry.get("output_shape", ())):
                continue
            if (
                k.kind in COMPUTE_KINDS
                and k.kind != "gemm"
                and not _fits(k.input_shape, entry.get("input_shape", ()))
            ):
                continue
            times[i], used[j] = float(entry["ms"]), True
            break
    return times
