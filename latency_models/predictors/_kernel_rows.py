"""A kernel's inputs to the kernel predictor's trees, and its unit of work.

Per kernel kind and dtype (``conv.fp32``...), :class:`~._kernel_predictor.KernelPredictor`
costs a kernel ``t = c0 + work * exp(z)``. ``work`` (:func:`row_work`) is what the kernel
must do at full speed: effective MACs for compute kernels (the channels padded to
onnxruntime's NCHWc block, the taps that fall in the zero padding skipped, as MLAS skips
them) plus the weight bytes they read, at a cost per byte learned per kind and device
(:func:`~._kernel_calibration.weight_traffic_ratio`); window taps for ``qpool`` (a uint8
MaxPool in NCHW, which onnxruntime runs in a generic loop over every tap); megabytes moved
for the others. ``z``, the log of the time per unit of work, is learned from the rows of
:func:`kernel_row`: the kernel's shape and the graph's total weight and activation bytes
(whether its weights are still cached when it runs). Weights count as read only where some
output reads them: an fp32 conv skips its taps that meet only padding, so ResNet-18's last
3x3 convs, on 1x1 maps at 32 px input, read a ninth of their weights and the whole net 19 of
its 47 MB, which stay in a 32 MB L3 between runs
(:func:`~latency_models.features._kernel_table.touched_tap_fraction`; the additive model's
weight term counts the same bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latency_models.features._features import COMPUTE_KINDS, KernelFeatures
from latency_models.features._kernel_table import (
    WORK_CHANNEL_BLOCK,
    KernelTable,
    c16,
    effective_mmacs_of,
    fields_matrix,
    kernel_fields,
)
from latency_models.predictors._base import FloatArray


def effective_mmacs(k: KernelFeatures) -> float:
    """Millions of MACs the runtime computes: channels padded to the block, padding skipped."""
    return float(effective_mmacs_of(fields_matrix([kernel_fields(k)]))[0])


def row_work(raw: FloatArray, key: str, bytes_per_mac: float = 0.0) -> FloatArray:
    """Work unit of the throughput of kernels of ``key``, from their raw rows.

    Effective MMACs for compute kernels, plus their weight traffic: the weight bytes some
    output reads, in MAC-equivalents (``bytes_per_mac`` is the kind's ratio of time per byte
    to time per MAC, :func:`~._kernel_calibration.weight_traffic_ratio`); million window
    taps (outputs times window size) for ``qpool``, whose generic loop visits every tap (a
    3x3 window costs about 9/4 of a 2x2 one at the same output size); MB moved (activations
    and weights) for the others. ``raw`` is :func:`kernel_row` output, before
    :func:`kernel_rows` logs it.
    """
    kind = key.split(".")[0]
    if kind in COMPUTE_KINDS:
        work = raw[:, 17] + bytes_per_mac * raw[:, 2]
    elif kind == "qpool":
        work = raw[:, 0]  # a pool's MACs count its window taps
    else:
        work = raw[:, 1] + raw[:, 2]
    return np.asarray(work / 1e6 + 1e-3)


_LOGGED = np.array([True] * 5 + [False] * 2 + [True] * 4 + [False] * 4 + [True, False] + [True] * 3
                   + [False] * 2 + [True] * 2)  # fmt: skip
"""Which columns of :func:`kernel_row` go on a log scale (``log1p``)."""


def kernel_row(k: KernelFeatures, graph_weight_bytes: float, graph_bytes: float) -> list[float]:
    """Tree inputs of one kernel in its graph, raw (:func:`kernel_rows` logs the sizes).

    ``graph_weight_bytes`` and ``graph_bytes`` count the weights a run reads
    (:attr:`KernelTable.context`), not the weights the graph stores.
    """
    return [*own_rows(fields_matrix([kernel_fields(k)]))[0], graph_weight_bytes, graph_bytes]


def own_rows(f: FloatArray) -> FloatArray:
    """The kernels' own columns of :func:`kernel_row`, from rows of :func:`fields_matrix`.

    Columns: MACs, activation bytes, the weight bytes some output reads (the taps that
    meet only padding left out, :func:`~.touched_tap_fraction`:
    a 3x3 conv on a 1x1 map reads a ninth of its weights), channels in and out, kernel size,
    stride, groups, output pixels, output and input height, channels aligned to 8 and to 16
    (in, out), output elements, fused ops, effective MACs (:func:`effective_mmacs`, compute
    kernels), int8 im2col elements, output row blocks, a fused post-activation, a fused Add.
    """
    macs, act, wb, cin, cout, kh, kw, stride, groups, pix, h_out, h_in = f[:, :12].T
    numel, n_fused, post, add, kind, int8, _, read = f[:, 12:].T
    taps = kh * kw
    conv_int8 = (kind >= 0) & (kind <= COMPUTE_KINDS.index("conv1x1")) & (int8 > 0)
    im2col = np.where(conv_int8 & ((taps > 1) | (stride > 1)), taps * cin * pix, 0.0)
    return np.column_stack([
        macs, act, wb * read, cin, cout, kh, stride, groups, pix, h_out, h_in,
        cin % 8 == 0, cout % 8 == 0, cin % 16 == 0, cout % 16 == 0, numel, n_fused,
        np.where(kind >= 0, effective_mmacs_of(f) * 1e6, 0.0), im2col,
        h_out * c16(cout) / WORK_CHANNEL_BLOCK, post, add,
    ])  # fmt: skip


def _raw_rows(table: KernelTable) -> FloatArray:
    """:func:`kernel_row` of every row of ``table``: its own columns, then its graph's."""
    return np.hstack([own_rows(table.fields), table.context[table.row_graph]])


def kernel_rows(rows: Sequence[Sequence[float]] | FloatArray) -> FloatArray:
    """:func:`kernel_row` outputs as the trees' input matrix (sizes on a log scale)."""
    x = np.array(rows, dtype=np.float64).reshape(len(rows), _LOGGED.size)
    x[:, _LOGGED] = np.log1p(x[:, _LOGGED])
    return x
