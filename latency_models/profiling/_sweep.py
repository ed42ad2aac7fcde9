"""The profiling sweep: a deterministic stream of named graphs to measure on a device.

:func:`sweep_graphs` mixes single kernels at many shapes (:func:`~._networks.kernel_graph`)
with random networks (:func:`~._networks.random_network`, and with ``wide``
:func:`~._networks.staged_network` and max pools between two convs), a share of them
quantized to int8 QDQ (:func:`~._builder.quantize_qdq`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from latency_models.profiling._builder import _Builder, _conv_macs, quantize_qdq
from latency_models.profiling._networks import kernel_graph, random_network, staged_network

if TYPE_CHECKING:
    import onnx

SWEEP_REVISION = 3
"""Bumped when :func:`sweep_graphs` yields other graphs for the same arguments (caches of
its graphs name it). What each revision changed: CHANGELOG.md."""


def sweep_graphs(
    n: int,
    *,
    seed: int = 0,
    int8_share: float = 0.4,
    network_share: float = 0.5,
    wide: bool = False,
    mixed_share: float = 0.15,
    staged_share: float = 0.5,
) -> Iterator[tuple[str, onnx.ModelProto]]:
    """``n`` named profiling graphs: single kernels at many shapes and random networks.

    Deterministic for a given ``seed`` (and ``wide``); the i-th graph does not depend on
    ``n``, so a longer sweep extends a shorter one (and a resumed profile finds its graphs
    stored).

    Args:
        n: Number of graphs.
        seed: Base seed.
        int8_share: Share of graphs quantized to int8 QDQ.
        network_share: Share of random networks (the rest are single kernels).
        wide: Cover the shapes of ImageNet-size networks too: kernels and networks at up to
            224 px and 960 channels (single kernels capped at ``_WIDE_MAX_MACS``), networks
            in mixed precision (some convs int8, the rest fp32), and max pools between two
            convs in fp32, int8 and fp32-to-int8 (:func:`_wide_pool`, a fifth of the
            single-kernel graphs).
        mixed_share: With ``wide``, share of networks quantized with about half their
            convs left in fp32 (int8/fp32 edges: Quantize/DequantizeLinear kernels).
        staged_share: With ``wide``, share of the networks that are ImageNet-shaped
            (:func:`staged_network`: stem, stages of widening blocks, up to 3 GMACs) rather
            than :func:`random_network`'s few shallow blocks.

    Yields:
        (name, graph) pairs; names are unique and stable.
    """
    for i in range(n):
        rng = np.random.default_rng([seed, i] if not wide else [seed, i, 1])
        is_net = rng.random() < network_share
        if is_net and wide:
            staged = np.random.default_rng([seed, i, 2])
            if staged.random() < staged_share:
                rng = staged  # its own stream: the other graphs stay as they were
                graph = staged_network(int(rng.integers(1 << 30)))
                name = f"w{graph.graph.name}"
            else:
                name, graph = _wide_network(rng, i)
        elif is_net:
            name, graph = f"net{i}", random_network(int(rng.integers(1 << 30)))
        elif wide:
            pools = np.random.default_rng([seed, i, 3])
            if pools.random() < _WIDE_POOL_SHARE:  # its own stream: the others stay as they were
                yield _wide_pool(pools, i, int8=int8_share > 0)
                continue
            name, graph = _wide_kernel(rng, i)
        else:
            name, graph = _random_kernel(rng, i)
        u = rng.random()
        if u < int8_share or (wide and is_net and u < int8_share + mixed_share):
            exclude: list[str] = []
            if u >= int8_share:
                convs = [nd.name for nd in graph.graph.node if nd.op_type in ("Conv", "Gemm")]
                exclude = [c for c in convs if rng.random() < 0.5]
            try:
                graph = quantize_qdq(graph, seed=i, nodes_to_exclude=exclude)
                name += "_mixed" if exclude else "_int8"
            except Exception:  # an exotic shape the quantizer refuses: keep fp32
                pass
        yield name, graph


_WIDE_MAX_MACS = 6e8
"""MAC cap of one wide-sweep kernel or network (keeps each measurement near a second)."""


def _wide_kernel(rng: np.random.Generator, i: int) -> tuple[str, onnx.ModelProto]:
    op = str(rng.choice(["conv", "conv", "dwconv", "conv1x1", "conv1x1", "linear"]))
    chans = [8, 16, 24, 32, 40, 48, 64, 72, 96, 120, 128, 144, 160, 192, 240, 256, 320, 384, 512]
    if op == "linear":
        cin = int(rng.choice([64, 128, 256, 512, 1000, 1024, 1280, 2048, 4096]))
        cout = int(rng.choice([10, 100, 256, 512, 1000, 1024, 4096]))
        return f"w{i}_linear_{cin}x{cout}", kernel_graph("linear", cin=cin, cout=cout, seed=i)
    for _ in range(100):
        if op == "dwconv":
            cin = int(rng.choice([*chans, 576, 672, 720, 960]))
        else:
            cin = int(rng.choice([3, *chans] if op == "conv" else chans))
        cout = int(rng.choice([*chans, 1280] if op == "conv1x1" else chans))
        size = int(rng.choice([4, 7, 8, 14, 16, 28, 32, 48, 56, 112, 224]))
        kernel = (
            int(rng.choice([3, 3, 3, 5, 7] if cin == 3 else [3, 3, 3, 5]))
            if op != ("conv1x1")
            else 1
        )
        stride = int(rng.choice([1, 1, 2]))
        if _conv_macs(op, cin, cout, size, kernel, stride) <= _WIDE_MAX_MACS:
            break
    g = kernel_graph(
        op, cin=cin, cout=cout, size=size, kernel=kernel, stride=stride, seed=i,
        bn=bool(rng.random() < 0.7), act=str(rng.choice(["Relu", "Relu6"]))
        if rng.random() < 0.75 else None,
    )  # fmt: skip
    return f"w{i}_{op}_{cin}x{cout}_{size}px_k{kernel}s{stride}", g


_WIDE_POOL_SHARE = 0.2
"""Share of the wide sweep's single-kernel graphs that are max-pool graphs (:func:`_wide_pool`)."""


def _wide_pool(
    rng: np.random.Generator, i: int, *, int8: bool = True
) -> tuple[str, onnx.ModelProto]:
    """A max pool between two convs, in fp32, int8, or fp32 in and int8 out.

    Only fp32 when not ``int8``: a sweep with ``int8_share=0`` has no integer kernel. The
    last is what a mixed-precision network with an fp32 stem runs: onnxruntime
    quantizes ahead of the pool and runs it on uint8 NCHW data in a generic loop
    (``qpool``), far slower than the fp32 or the int8 NHWC pool. Networks alone gave
    the profile three such pools, all 2x2, where ResNet's stem pool is a padded 3x3.
    """
    chans = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    for _ in range(100):
        cin = int(rng.choice([3, *chans]))
        c = int(rng.choice(chans))
        size = int(rng.choice([8, 14, 16, 28, 32, 56, 64, 112]))
        kernel = int(rng.choice([1, 3]))
        if _conv_macs("conv", cin, c, size, kernel, 1) <= _WIDE_MAX_MACS / 2:
            break
    window = int(rng.choice([2, 3]))
    stride = int(rng.choice([1, 2, 2]))
    pads = [1] * 4 if window == 3 and rng.random() < 0.8 else [0] * 4
    b = _Builder(np.random.default_rng(i))
    y = b.conv("input", cin, c, kernel)
    y = b.node("MaxPool", [y], kernel_shape=[window] * 2, strides=[stride] * 2, pads=pads)
    g = b.model([1, cin, size, size], b.conv(y, c, c, 1, act=None), "")
    precision = str(rng.choice(["fp32", "int8", "fp32-int8"], p=[0.25, 0.25, 0.5]))
    precision = precision if int8 else "fp32"
    if precision != "fp32":
        first = [g.graph.node[0].name] if precision == "fp32-int8" else []
        g = quantize_qdq(g, seed=i, nodes_to_exclude=first)
    return f"w{i}_pool_{cin}x{c}_{size}px_k{window}s{stride}p{pads[0]}_{precision}", g


def _wide_network(rng: np.random.Generator, i: int) -> tuple[str, onnx.ModelProto]:
    from latency_models.features._features import graph_features

    for _ in range(50):
        size = int(rng.choice([16, 32, 48, 64, 96, 128, 160, 224]))
        width = int(rng.choice([8, 12, 16, 20, 24, 32, 40, 48, 64, 96]))
        depth = int(rng.integers(2, 11))
        g = random_network(int(rng.integers(1 << 30)), size=size, width=width, depth=depth)
        if graph_features(g).totals["macs"] <= 2 * _WIDE_MAX_MACS:
            break
    return f"wnet{i}_{g.graph.name}", g


def _random_kernel(rng: np.random.Generator, i: int) -> tuple[str, onnx.ModelProto]:
    op = str(rng.choice(["conv", "conv", "dwconv", "conv1x1", "linear"]))
    chans = [3, 8, 12, 16, 24, 32, 40, 48, 64, 96, 128, 160, 256]
    cin = int(rng.choice(chans[1:] if op != "conv" else chans))
    cout = int(rng.choice(chans[1:]))
    if op == "linear":
        cin, cout = (
            int(rng.choice([64, 128, 256, 512, 1000, 1024])),
            int(rng.choice([10, 64, 128, 256, 512, 1000])),
        )
        return f"k{i}_linear_{cin}x{cout}", kernel_graph("linear", cin=cin, cout=cout, seed=i)
    size = int(rng.choice([7, 14, 16, 28, 32, 56, 112]))
    kernel = int(rng.choice([3, 3, 5])) if op != "conv1x1" else 1
    stride = int(rng.choice([1, 1, 2]))
    g = kernel_graph(
        op, cin=cin, cout=cout, size=size, kernel=kernel, stride=stride, seed=i,
        bn=bool(rng.random() < 0.7), act="Relu" if rng.random() < 0.7 else None,
    )  # fmt: skip
    return f"k{i}_{op}_{cin}x{cout}_{size}px_k{kernel}s{stride}", g
