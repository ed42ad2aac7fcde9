"""Generic kernel graphs for profiling a device: built with ``onnx.helper``, no torch.

Two sources of graphs to measure:

- :func:`kernel_graph`: one kernel (conv, depthwise conv, 1x1 conv, linear) with its usual
  neighbours (BatchNorm, ReLU), at one shape; a sweep covers many shapes.
- :func:`random_network`: a small random CNN (plain, depthwise-separable and residual
  blocks, pools, a linear head) so predictors also see kernels in context.

Either can be turned into an int8 QDQ graph with :func:`quantize_qdq` (static quantization
through ``onnxruntime.quantization``: uint8 activations, per-channel int8 weights, the
pipeline that gave real integer kernels in FIELD-NOTES.md).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

OPSET = 17


@dataclass
class _Builder:
    """Accumulates nodes and initializers of one graph."""

    rng: np.random.Generator
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bn: bool = True,
        act: str | None = "Relu",
    ) -> str:
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, (2.0 / fan_in) ** 0.5, (cout, cin // groups, k, k))
        inputs = [x, self.const("w", w)]
        if not bn:
            inputs.append(self.const("b", self.rng.normal(0, 0.01, cout)))
        y = self.node(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
            pads=[k // 2] * 4, group=groups,
        )  # fmt: skip
        if bn:
            y = self.node(
                "BatchNormalization",
                [
                    y,
                    self.const("g", 1 + 0.1 * self.rng.normal(size=cout)),
                    self.const("beta", 0.1 * self.rng.normal(size=cout)),
                    self.const("mean", 0.1 * self.rng.normal(size=cout)),
                    self.const("var", 1 + 0.1 * self.rng.random(cout)),
                ],
            )
        if act == "Relu":
            y = self.node("Relu", [y])
        elif act == "Relu6":
            y = self.node(
                "Clip", [y, self.const("lo", np.array(0.0)), self.const("hi", np.array(6.0))]
            )
        return y

    def linear(self, x: str, fin: int, fout: int) -> str:
        w = self.rng.normal(0, (1.0 / fin) ** 0.5, (fout, fin))
        b = self.rng.normal(0, 0.01, fout)
        return self.node("Gemm", [x, self.const("w", w), self.const("b", b)], transB=1)

    def model(self, x_shape: Sequence[int], y: str, name: str) -> onnx.ModelProto:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model


def kernel_graph(
    op: str,
    *,
    cin: int,
    cout: int = 0,
    size: int = 1,
    kernel: int = 3,
    stride: int = 1,
    batch: int = 1,
    bn: bool = True,
    act: str | None = "Relu",
    seed: int = 0,
) -> onnx.ModelProto:
    """A graph of one kernel at one shape.

    Args:
        op: ``"conv"`` (dense k x k), ``"dwconv"`` (depthwise k x k), ``"conv1x1"`` or
            ``"linear"`` (a Gemm; ``size`` is ignored).
        cin: Input channels (features for linear).
        cout: Output channels (ignored for dwconv, which keeps ``cin``).
        size: Input height = width, pixels.
        kernel: Kernel size k for convs.
        stride: Conv stride.
        batch: Batch size.
        bn: Follow the conv with a BatchNormalization (folded by the runtime).
        act: ``"Relu"``, ``"Relu6"`` or None.
        seed: Weight seed.

    Returns:
        The ModelProto (opset 17), input named ``input``.

    Raises:
        ValueError: ``op`` is not one of the four.
    """
    b = _Builder(np.random.default_rng(seed))
    if op == "linear":
        y = b.linear("input", cin, cout)
        if act:
            y = b.node("Relu", [y])
        return b.model([batch, cin], y, f"linear_{cin}x{cout}")
    if op == "conv":
        y = b.conv("input", cin, cout, kernel, stride=stride, bn=bn, act=act)
    elif op == "conv1x1":
        y = b.conv("input", cin, cout, 1, stride=stride, bn=bn, act=act)
    elif op == "dwconv":
        y = b.conv("input", cin, cin, kernel, stride=stride, groups=cin, bn=bn, act=act)
    else:
        raise ValueError(
            f"kernel_graph op must be one of 'conv', 'dwconv', 'conv1x1', 'linear', got {op!r}."
        )
    return b.model([batch, cin, size, size], y, f"{op}_{cin}x{cout}_{size}_k{kernel}s{stride}")


def random_network(
    seed: int,
    *,
    size: int | None = None,
    width: int | None = None,
    depth: int | None = None,
    style: str | None = None,
) -> onnx.ModelProto:
    """A small random CNN classifier for 3-channel images (fp32).

    Args:
        seed: Drives every unset choice below and the weights.
        size: Input resolution, pixels (default: random in 16..96).
        width: Stem channels (default: random in 8..48, not always a multiple of 8).
        depth: Number of blocks (default: random in 2..7).
        style: ``"plain"`` (VGG-like), ``"separable"`` (MobileNetV1-like), ``"inverted"``
            (MobileNetV2-like), ``"residual"`` (ResNet basic blocks) or ``"mixed"``.

    Returns:
        ModelProto with input ``input`` of shape (1, 3, size, size).
    """
    rng = np.random.default_rng(seed)
    size = size or int(rng.choice([16, 32, 48, 64, 96, 128]))
    width = width or int(rng.choice([8, 12, 16, 20, 24, 32, 40, 48, 64]))
    depth = depth or int(rng.integers(2, 9))
    styles = ["plain", "separable", "inverted", "residual"]
    style = style or str(rng.choice([*styles, "mixed"]))
    b = _Builder(rng)
    c = width
    y = b.conv("input", 3, c, 3, stride=1 if size <= 32 else 2)
    for i in range(depth):
        kind = style if style != "mixed" else str(rng.choice(styles))
        down = i > 0 and rng.random() < 0.4
        cout = int(c * rng.choice([1, 1, 1.5, 2])) if down else c
        cout = max(4, cout - (cout % 4 if rng.random() < 0.6 else 0))
        s = 2 if down else 1
        if kind == "plain":
            y = b.conv(y, c, cout, int(rng.choice([1, 3, 3, 5])), stride=s)
        elif kind in ("separable", "inverted"):
            mid = c * int(rng.choice([1, 2]) if kind == "separable" else rng.choice([4, 6]))
            z = b.conv(y, c, mid, 1) if mid != c else y
            z = b.conv(z, mid, mid, 3, stride=s, groups=mid, act="Relu6")
            z = b.conv(z, mid, cout, 1, act=None)
            y = b.node("Add", [y, z]) if (s == 1 and cout == c) else z
        else:
            z = b.conv(y, c, cout, 3, stride=s)
            z = b.conv(z, cout, cout, 3, act=None)
            short = y if (s == 1 and cout == c) else b.conv(y, c, cout, 1, stride=s, act=None)
            y = b.node("Relu", [b.node("Add", [short, z])])
        c = cout
        if rng.random() < 0.15 and size > 16:
            y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("GlobalAveragePool", [y])
    y = b.node("Flatten", [y], axis=1)
    y = b.linear(y, c, int(rng.choice([10, 100])))
    return b.model([1, 3, size, size], y, f"rand{seed}_{style}_{size}px_w{width}_d{depth}")


_STAGED_BLOCKS = ("basic", "bottleneck", "inverted", "plain", "separable")


def staged_network(
    seed: int,
    *,
    size: int | None = None,
    block: str | None = None,
    max_mmacs: float = 3000.0,
    max_weight_mb: float = 64.0,
) -> onnx.ModelProto:
    """A random ImageNet-shaped CNN: a stem, 3-5 stages of widening blocks, a classifier.

    Covers what :func:`random_network`'s few shallow blocks do not: the macro structure of
    classification networks. A 3x3/7x7 stride-2 stem (often followed by a padded 3x3
    max pool; under 64 px half the networks have a stride-1 3x3 stem instead), stages that
    halve the map and multiply the width by 1.5-2.5 (so weights reach tens of MB and late
    convs run on 1x1-7x7 maps), 1-4 blocks a stage, and a 10-1000-class
    head, sometimes behind a wide 1x1 conv. One block kind per network: ``"basic"`` and
    ``"bottleneck"`` residual blocks, ``"inverted"`` residuals (expansion 3-6, 3x3 or 5x5
    depthwise), ``"plain"`` conv stacks with max-pool downsampling, ``"separable"``
    depthwise-separable blocks.

    Args:
        seed: Drives every unset choice and the weights.
        size: Input resolution, pixels (default: random in 32..224).
        block: One of the kinds above (default: random).
        max_mmacs: The width is scaled down until the network has at most this many
            million MACs (keeps each measurement near a second)...
        max_weight_mb: ...and at most this many MB of fp32 weights (ResNet-18 has 47).

    Returns:
        ModelProto with input ``input`` of shape (1, 3, size, size).

    Raises:
        ValueError: ``block`` is not one of the kinds above.
    """
    from latency_models.features._features import graph_features

    rng = np.random.default_rng(seed)
    size = size or int(rng.choice([32, 48, 64, 96, 112, 128, 160, 192, 224]))
    block = block or str(rng.choice(_STAGED_BLOCKS))
    if block not in _STAGED_BLOCKS:
        raise ValueError(f"staged_network block must be one of {_STAGED_BLOCKS}, got {block!r}.")
    n_stages = int(rng.integers(3, 6))
    growth = float(rng.choice([1.5, 2.0, 2.0, 2.5]))
    stem = int(rng.choice([16, 24, 32, 48, 64]))
    depths = [int(rng.integers(1, 5)) for _ in range(n_stages)]
    # an ImageNet stem (stride 2, often a max pool) at any size; below 64 px only half the
    # networks, as a net built for 224 px and run on a small input: its late convs then run
    # on 1x1-2x2 maps with MBs of weights (ResNet-18 at 32 px), which a stride-1 stem never
    # reaches (the draw is made for small inputs only: the others stay as they were)
    big = size >= 64 or rng.random() < 0.5
    stem_k = int(rng.choice([3, 7])) if big else 3
    pool_stem = big and block != "plain" and rng.random() < 0.6
    expansion = int(rng.choice([3, 4, 6]))
    dw_k = int(rng.choice([3, 3, 5]))
    head = int(rng.choice([0, 1024, 1280])) if block in ("inverted", "separable") else 0
    classes = int(rng.choice([10, 100, 1000, 1000]))
    align = rng.random() < 0.8  # else odd channel counts (misaligned to the 8/16 blocks)
    weights_seed = int(rng.integers(1 << 30))

    def ch(c: float) -> int:
        return max(8, round(c / 8) * 8) if align else max(4, round(c))

    width = 1.0
    for _ in range(40):
        b = _Builder(np.random.default_rng(weights_seed))
        c = ch(stem * width)
        y = b.conv("input", 3, c, stem_k, stride=2 if big else 1)
        if pool_stem:
            y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        for s, depth in enumerate(depths):
            cout = ch(stem * width * growth ** (s + (block == "bottleneck")))
            for j in range(depth):
                stride = 2 if (j == 0 and s > 0) else 1
                y = _staged_block(b, block, y, c, cout, stride, expansion, dw_k)
                c = cout
        if head:
            y = b.conv(y, c, head, 1, act="Relu6")
            c = head
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
        g = b.model([1, 3, size, size], b.linear(y, c, classes), "")
        totals = graph_features(g).totals
        small = totals["macs"] <= max_mmacs * 1e6 and totals["weight_bytes"] <= max_weight_mb * 1e6
        if small or width < 0.05:
            break
        width *= 0.8
    tag = "_s2stem" if big and size < 64 else ""
    g.graph.name = (
        f"staged{seed}_{block}_{size}px{tag}_s{stem}x{growth}_d{''.join(map(str, depths))}"
    )
    return g


def _staged_block(
    b: _Builder, block: str, y: str, c: int, cout: int, stride: int, expansion: int, dw_k: int
) -> str:
    if block == "plain":
        if stride == 2:
            y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        return b.conv(y, c, cout, 3)
    if block == "separable":
        z = b.conv(y, c, c, dw_k, stride=stride, groups=c)
        return b.conv(z, c, cout, 1)
    if block == "inverted":
        mid = c * expansion
        z = b.conv(y, c, mid, 1, act="Relu6")
        z = b.conv(z, mid, mid, dw_k, stride=stride, groups=mid, act="Relu6")
        z = b.conv(z, mid, cout, 1, act=None)
        return b.node("Add", [y, z]) if (stride == 1 and c == cout) else z
    if block == "basic":
        z = b.conv(y, c, cout, 3, stride=stride)
        z = b.conv(z, cout, cout, 3, act=None)
    else:  # bottleneck: 1x1 down to a quarter, 3x3, 1x1 up
        mid = max(8, cout // 4)
        z = b.conv(y, c, mid, 1)
        z = b.conv(z, mid, mid, 3, stride=stride)
        z = b.conv(z, mid, cout, 1, act=None)
    short = y if (stride == 1 and c == cout) else b.conv(y, c, cout, 1, stride=stride, act=None)
    return b.node("Relu", [b.node("Add", [short, z])])


def quantize_qdq(
    graph: onnx.ModelProto,
    *,
    nodes_to_exclude: Sequence[str] = (),
    n_calibration: int = 4,
    seed: int = 0,
) -> onnx.ModelProto:
    """Static int8 QDQ quantization of an fp32 graph with random calibration data.

    uint8 activations, per-channel int8 weights, QDQ format (onnxruntime then runs
    ``QLinearConv``/``QGemm`` kernels).

    Args:
        graph: fp32 graph with static input shapes.
        nodes_to_exclude: Node names to keep in fp32 (mixed precision).
        n_calibration: Random calibration samples.
        seed: Calibration data seed.

    Returns:
        The QDQ ModelProto.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(seed)
    shapes = {
        inp.name: [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        for inp in graph.graph.input
    }
    data = [
        {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in range(n_calibration)
    ]

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        dst = Path(tmp) / "int8.onnx"
        onnx.save(graph, str(src))
        # Folds BatchNorm into the convs first, as a real export pipeline does.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
        )
        return onnx.load(str(dst))


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


def _conv_macs(op: str, cin: int, cout: int, size: int, kernel: int, stride: int) -> float:
    out = math.ceil(size / stride) ** 2
    if op == "dwconv":
        return float(out * cin * kernel * kernel)
    return float(out * cin * cout * kernel * kernel)


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
