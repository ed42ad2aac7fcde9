"""The kernels of many graphs as one table: what the kernel-level predictors read of each.

Both the kernel-additive model (:class:`~latency_models.KernelAdditivePredictor`)
and the per-kernel trees (:class:`~latency_models.KernelPredictor`) cost a
graph as a sum over its kernels. Walking the kernels in Python was most of their prediction
time, so it is done once, and little is done per kernel (:func:`kernel_table`): each kernel's
attributes are read into a tuple, equal tuples found by a dict, equal kernels of one graph
share a row, and the numbers :func:`kernel_fields` gives a kernel are worked out in numpy
for the distinct tuples. :class:`~latency_models.CombinedPredictor` builds
the table once for both of its models.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latency_models.features._features import COMPUTE_KINDS, GraphFeatures, KernelFeatures

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_KIND_CODE = {kind: code for code, kind in enumerate(COMPUTE_KINDS)}
POST_ACTIVATIONS = frozenset({"Clip", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh"})

FIELDS = (
    "macs", "activation_bytes", "weight_bytes", "in_channels", "out_channels", "kernel_h",
    "kernel_w", "stride", "groups", "output_pixels", "output_h", "input_h", "output_numel",
    "n_fused", "post_activation", "fused_add", "compute_kind", "int8", "valid_taps",
    "touched_taps",
)  # fmt: skip
"""Columns of :func:`kernel_fields` (and of :attr:`KernelTable.fields`)."""
F = {name: i for i, name in enumerate(FIELDS)}


@functools.lru_cache(maxsize=4096)
def _taps(n_in: int, n_out: int, k: int, s: int) -> tuple[float, float]:
    """Along one axis: the share of taps inside the input, and of taps any output reads.

    The first is the share of multiply-adds that read the input rather than the padding
    (same padding); the second the share of the kernel's weights that some output position
    uses at all: a 3x3 conv on a 1x1 map reads only its centre tap, a ninth of its
    weights, however many channels it has.
    """
    if k <= 1 or n_out <= 0:
        return 1.0, 1.0
    pad = max(0, ((n_out - 1) * s + k - n_in) // 2)
    start = np.arange(n_out) * s - pad
    inside = np.minimum(n_in, start + k) - np.maximum(0, start)
    tap = start[:, None] + np.arange(k)[None, :]
    read = ((tap >= 0) & (tap < n_in)).any(axis=0)
    return float(np.maximum(inside, 0).sum()) / (n_out * k), float(read.mean())


def _reads_all(k: KernelFeatures) -> bool:
    return k.dtype == "int8" or k.kind == "gconv"


def touched_tap_fraction(k: KernelFeatures) -> float:
    """Share of a kernel's weights that a run reads.

    An fp32 convolution skips the taps that land in the zero padding (MLAS's NCHWc
    kernels), so the weights of a tap no output position reads stay in memory unread: a
    3x3 conv on a 1x1 map reads a ninth of its weights. An int8 convolution, and an fp32
    one that runs NCHW (``gconv``), multiplies an im2col buffer, padding included, by all
    of its weights.
    """
    if len(k.input_shape) < 4 or len(k.output_shape) < 4 or _reads_all(k):
        return 1.0
    return (
        _taps(k.input_shape[2], k.output_shape[2], k.kernel_size[0], k.stride[0])[1]
        * _taps(k.input_shape[3], k.output_shape[3], k.kernel_size[1], k.stride[1])[1]
    )


def valid_tap_fraction(k: KernelFeatures) -> float:
    """Share of a convolution's multiply-adds that read the input rather than its padding."""
    if len(k.input_shape) < 4 or len(k.output_shape) < 4:
        return 1.0
    return (
        _taps(k.input_shape[2], k.output_shape[2], k.kernel_size[0], k.stride[0])[0]
        * _taps(k.input_shape[3], k.output_shape[3], k.kernel_size[1], k.stride[1])[0]
    )


def kernel_fields(k: KernelFeatures) -> tuple[float, ...]:
    """The numbers of a kernel the predictors use, in :data:`FIELDS` order.

    One kernel's row of :func:`kernel_table`, worked out by the same code
    (:func:`_fields_of`, which does many kernels at once).
    """
    return tuple(kernels_fields([k])[0].tolist())


def kernels_fields(kernels: Sequence[KernelFeatures]) -> FloatArray:
    """:func:`kernel_fields` of many kernels at once, (len(kernels), len(FIELDS))."""
    return _fields_of(list(map(_RAW, kernels)))


def fields_matrix(fields: Sequence[tuple[float, ...]]) -> FloatArray:
    """:func:`kernel_fields` tuples as an (n, len(FIELDS)) array."""
    return np.array(fields, dtype=np.float64).reshape(len(fields), len(FIELDS))


WORK_CHANNEL_BLOCK = 16
"""Channel multiple a compute kernel's work is padded to (:func:`effective_mmacs_of`).

The NCHWc block of an AVX-512 CPU, and 16 on AVX2-only CPUs too, whose block is 8: MLAS's
AVX2 kernels compute several filter blocks at once. On an AVX2 AMD EPYC
(``experiments/predictor_accuracy.py``, kernel model, mean of five tree seeds) padding to 8
gives 84.0% within +-10% of the first held-out set where 16 gives 90.8% (local-cpu-2t: 82.3%
and 82.8%), with the layout itself (:mod:`latency_models.measurement._host`) the host's in both."""


def c16(c: FloatArray) -> FloatArray:
    """Channels rounded up to whole :data:`WORK_CHANNEL_BLOCK` blocks."""
    return np.asarray(np.ceil(c / WORK_CHANNEL_BLOCK) * WORK_CHANNEL_BLOCK, dtype=np.float64)


def effective_mmacs_of(f: FloatArray) -> FloatArray:
    """Millions of MACs the runtime computes, for rows of :func:`fields_matrix`.

    Channels are padded to the NCHWc block (a first conv with at most 4 input channels
    reads NCHW unpadded) and an fp32 conv skips the taps that land in the padding; an int8
    one multiplies them (its im2col buffer holds the zero point there: ResNet-18's last
    3x3 convs at 32 px input, on 1x1 maps, take 90 us in int8 and 55 us in fp32 on
    ``local-cpu``); a ``gconv`` (run NCHW, group by group) computes its plain multiply-adds.
    """
    cin, cout = f[:, F["in_channels"]], f[:, F["out_channels"]]
    groups, pix = f[:, F["groups"]], f[:, F["output_pixels"]]
    kind = f[:, F["compute_kind"]]
    inside = np.where(f[:, F["int8"]] > 0, 1.0, f[:, F["valid_taps"]])
    taps = f[:, F["kernel_h"]] * f[:, F["kernel_w"]]
    groups = np.maximum(groups, 1)
    cin_g = cin / groups
    per_group = np.where(cin_g > 4, c16(cin_g), cin_g) * c16(cout / groups)
    return np.asarray(
        np.where(
            kind == COMPUTE_KINDS.index("gemm"),
            c16(cin) * c16(cout) / 1e6,
            np.select(
                [kind == COMPUTE_KINDS.index("dwconv"), kind == COMPUTE_KINDS.index("gconv")],
                [c16(cout) * taps * pix * inside / 1e6, f[:, F["macs"]] / 1e6],
                per_group * groups * taps * pix * inside / 1e6,
            ),
        ),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class KernelTable:
    """Every kernel of a list of graphs; equal kernels of one graph share a row.

    Attributes:
        graph_of: Graph index of each kernel, in the graphs' kernel order.
        row_of: Row of each kernel.
        fields: One :func:`kernel_fields` row per distinct kernel, (rows, len(FIELDS)).
        row_graph: Graph index of each row.
        key_names: The ``kind.dtype`` keys present, in order of appearance.
        key_of: Index into ``key_names`` of each row.
        first: The first kernel of each row (to name its op in warnings).
        context: Each graph's weight bytes and bytes moved, (graphs, 2), counting only the
            weights a run reads (those that meet only padding left out,
            :func:`touched_tap_fraction`): what competes for the caches.
    """

    graph_of: IntArray
    row_of: IntArray
    fields: FloatArray
    row_graph: IntArray
    key_names: list[str]
    key_of: IntArray
    first: list[KernelFeatures]
    context: FloatArray

    def rows_by_key(self) -> dict[str, IntArray]:
        """Row indices of each ``kind.dtype``, in row order."""
        order = np.argsort(self.key_of, kind="stable")
        bounds = np.searchsorted(self.key_of[order], np.arange(len(self.key_names) + 1))
        return {name: order[bounds[c] : bounds[c + 1]] for c, name in enumerate(self.key_names)}


_RAW = operator.attrgetter(
    "kind", "dtype", "op", "macs", "activation_bytes", "weight_bytes", "in_channels",
    "out_channels", "kernel_size", "stride", "groups", "input_shape", "output_shape", "fused",
)  # fmt: skip
"""What :func:`kernel_fields` reads of a kernel, and its op: kernels equal in these share a row."""


def kernel_table(features: Sequence[GraphFeatures]) -> KernelTable:
    """All kernels of ``features`` in one :class:`KernelTable`.

    Python only reads each kernel's attributes into a tuple and looks the tuple up in a
    dict; the numbers of the distinct tuples are worked out by :func:`_fields_of` (shapes,
    fused ops and padding taps once per distinct value, the rest in numpy), the code
    :func:`kernel_fields` runs for one kernel.
    """
    kernels = [k for f in features for k in f.kernels]
    raws = list(map(_RAW, kernels))
    # each kernel's index of the first kernel equal to it (the dict is walked in C)
    first_equal: dict[tuple[Any, ...], int] = {}
    raw_of = np.fromiter(
        map(first_equal.setdefault, raws, itertools.count()), dtype=np.int64, count=len(raws)
    )
    graph_of = np.repeat(
        np.arange(len(features), dtype=np.int64), [len(f.kernels) for f in features]
    )
    # a row per distinct kernel of each graph: equal kernels of different graphs do not share
    # one, since a row also carries its graph's context
    _, first_of_row, row_of = np.unique(
        graph_of * max(len(raws), 1) + raw_of, return_index=True, return_inverse=True
    )
    distinct = np.fromiter(first_equal.values(), dtype=np.int64, count=len(first_equal))
    slot = np.zeros(len(raws), dtype=np.int64)
    slot[distinct] = np.arange(len(distinct))
    row_raw = slot[raw_of[first_of_row]]  # each row's index into `distinct`
    table = _fields_of([raws[i] for i in distinct.tolist()])[row_raw]
    key_codes: dict[str, int] = {}
    key_of_raw = np.array(
        [key_codes.setdefault(f"{raws[i][0]}.{raws[i][1]}", len(key_codes)) for i in distinct],
        dtype=np.int64,
    )
    row_of = row_of.reshape(-1).astype(np.int64)
    # the weights a run leaves unread (taps that meet only padding) take no cache space
    unread = table[:, F["weight_bytes"]] * (1.0 - table[:, F["touched_taps"]])
    skipped = np.bincount(graph_of, weights=unread[row_of], minlength=len(features))
    totals = np.array(
        [[f.totals.get("weight_bytes", 0.0), f.totals.get("bytes", 0.0)] for f in features],
        dtype=np.float64,
    ).reshape(len(features), 2)
    context = np.maximum(totals - skipped[:, None], 0.0)
    return KernelTable(
        graph_of=graph_of,
        row_of=row_of,
        fields=table,
        row_graph=graph_of[first_of_row],
        key_names=list(key_codes),
        key_of=key_of_raw[row_raw],
        first=[kernels[i] for i in first_of_row.tolist()],
        context=context,
    )


def _shape_numbers(shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """A shape's rank, dims 2 and 3 (1 below rank 4), spatial size and element count.

    As :func:`kernel_fields` counts them.
    """
    if len(shape) >= 4:
        pixels = math.prod(shape[2:])
        return len(shape), shape[2], shape[3], pixels, shape[0] * shape[1] * pixels
    return len(shape), 1, 1, shape[-1] if shape else 1, math.prod(shape) if shape else 1


def _fields_of(raws: Sequence[tuple[Any, ...]]) -> FloatArray:
    """:func:`kernel_fields` of kernels given as :data:`_RAW` tuples, (n, len(FIELDS))."""
    n = len(raws)
    if n == 0:
        return np.zeros((0, len(FIELDS)))
    (kind, dtype, _, macs, act, wb, cin, cout, ks, st, groups, ishape, oshape, fused) = zip(
        *raws, strict=True
    )
    shapes: dict[tuple[int, ...], int] = {}
    i_id = [shapes.setdefault(s, len(shapes)) for s in ishape]
    o_id = [shapes.setdefault(s, len(shapes)) for s in oshape]
    numbers = np.array([_shape_numbers(s) for s in shapes], dtype=np.int64).reshape(-1, 5)
    i_num, o_num = numbers[i_id], numbers[o_id]
    fuse: dict[tuple[str, ...], int] = {}
    f_id = [fuse.setdefault(x, len(fuse)) for x in fused]
    fused_numbers = np.array(
        [(len(x), not POST_ACTIVATIONS.isdisjoint(x), "Add" in x) for x in fuse], dtype=np.float64
    ).reshape(-1, 3)[f_id]
    kind_code = np.array([_KIND_CODE.get(x, -1) for x in kind], dtype=np.float64)
    int8 = np.array([x == "int8" for x in dtype])
    reads_all = int8 | (kind_code == _KIND_CODE["gconv"])
    ks_a = np.array(ks, dtype=np.int64).reshape(n, 2)
    st_a = np.array(st, dtype=np.int64).reshape(n, 2)
    inside, read = np.ones(n), np.ones(n)
    spatial = np.flatnonzero((i_num[:, 0] >= 4) & (o_num[:, 0] >= 4))
    if len(spatial):
        axes = np.concatenate(
            [
                np.stack([i_num[spatial, 1 + a], o_num[spatial, 1 + a], ks_a[spatial, a],
                          st_a[spatial, a]], axis=1)
                for a in (0, 1)
            ]
        )  # fmt: skip
        combos, which = np.unique(axes, axis=0, return_inverse=True)
        taps = np.array([_taps(*map(int, c)) for c in combos], dtype=np.float64).reshape(-1, 2)
        h, w = taps[which.reshape(-1)[: len(spatial)]], taps[which.reshape(-1)[len(spatial) :]]
        inside[spatial] = h[:, 0] * w[:, 0]
        read[spatial] = np.where(reads_all[spatial], 1.0, h[:, 1] * w[:, 1])
    columns = (
        macs, act, wb, cin, cout, ks_a[:, 0], ks_a[:, 1], st_a[:, 0], groups, o_num[:, 3],
        o_num[:, 1], i_num[:, 1], o_num[:, 4], fused_numbers[:, 0], fused_numbers[:, 1],
        fused_numbers[:, 2], kind_code, int8, inside, read,
    )  # fmt: skip
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
