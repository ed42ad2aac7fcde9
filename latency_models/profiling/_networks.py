"""Generic graphs for profiling a device: single kernels and random CNNs, no torch.

- :func:`kernel_graph`: one kernel (conv, depthwise conv, 1x1 conv, linear) with its usual
  neighbours (BatchNorm, ReLU), at one shape; a sweep covers many shapes.
- :func:`random_network`: a small random CNN (plain, depthwise-separable and residual
  blocks, pools, a linear head) so predictors also see kernels in context.
- :func:`staged_network`: a random ImageNet-shaped CNN (a stem, stages of widening blocks,
  a classifier).

Any of them can be turned into an int8 QDQ graph with
:func:`~latency_models.profiling._builder.quantize_qdq`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latency_models.profiling._builder import _Builder

if TYPE_CHECKING:
    import onnx


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

    plan = _StagedPlan.draw(seed, size, block)
    width = 1.0
    for _ in range(40):
        g = plan.graph(width)
        totals = graph_features(g).totals
        small = totals["macs"] <= max_mmacs * 1e6 and totals["weight_bytes"] <= max_weight_mb * 1e6
        if small or width < 0.05:
            break
        width *= 0.8
    tag = "_s2stem" if plan.big and plan.size < 64 else ""
    depths = "".join(map(str, plan.depths))
    g.graph.name = (
        f"staged{seed}_{plan.block}_{plan.size}px{tag}_s{plan.stem}x{plan.growth}_d{depths}"
    )
    return g


@dataclass(frozen=True)
class _StagedPlan:
    """The random choices of one :func:`staged_network`, all but its width."""

    size: int
    block: str
    depths: tuple[int, ...]
    growth: float
    stem: int
    big: bool
    stem_k: int
    pool_stem: bool
    expansion: int
    dw_k: int
    head: int
    classes: int
    align: bool
    weights_seed: int

    @classmethod
    def draw(cls, seed: int, size: int | None, block: str | None) -> _StagedPlan:
        """Draw every choice from ``seed``, in a fixed order (a network's graph depends on it).

        Raises:
            ValueError: ``block`` is not one of :data:`_STAGED_BLOCKS`.
        """
        rng = np.random.default_rng(seed)
        size = size or int(rng.choice([32, 48, 64, 96, 112, 128, 160, 192, 224]))
        block = block or str(rng.choice(_STAGED_BLOCKS))
        if block not in _STAGED_BLOCKS:
            raise ValueError(
                f"staged_network block must be one of {_STAGED_BLOCKS}, got {block!r}."
            )
        n_stages = int(rng.integers(3, 6))
        growth = float(rng.choice([1.5, 2.0, 2.0, 2.5]))
        stem = int(rng.choice([16, 24, 32, 48, 64]))
        depths = tuple(int(rng.integers(1, 5)) for _ in range(n_stages))
        # an ImageNet stem (stride 2, often a max pool) at any size; below 64 px only half the
        # networks, as a net built for 224 px and run on a small input: its late convs then
        # run on 1x1-2x2 maps with MBs of weights (ResNet-18 at 32 px), which a stride-1 stem
        # never reaches (the draw is made for small inputs only: the others stay as they were)
        big = size >= 64 or rng.random() < 0.5
        stem_k = int(rng.choice([3, 7])) if big else 3
        pool_stem = big and block != "plain" and rng.random() < 0.6
        expansion = int(rng.choice([3, 4, 6]))
        dw_k = int(rng.choice([3, 3, 5]))
        head = int(rng.choice([0, 1024, 1280])) if block in ("inverted", "separable") else 0
        classes = int(rng.choice([10, 100, 1000, 1000]))
        align = rng.random() < 0.8  # else odd channel counts (misaligned to the 8/16 blocks)
        weights_seed = int(rng.integers(1 << 30))
        return cls(
            size=size,
            block=block,
            depths=depths,
            growth=growth,
            stem=stem,
            big=big,
            stem_k=stem_k,
            pool_stem=pool_stem,
            expansion=expansion,
            dw_k=dw_k,
            head=head,
            classes=classes,
            align=align,
            weights_seed=weights_seed,
        )

    def ch(self, c: float) -> int:
        """Channels for a width of ``c``: a multiple of 8 unless the plan is misaligned."""
        return max(8, round(c / 8) * 8) if self.align else max(4, round(c))

    def graph(self, width: float) -> onnx.ModelProto:
        """The network at ``width`` times the drawn channels (unnamed)."""
        b = _Builder(np.random.default_rng(self.weights_seed))
        c = self.ch(self.stem * width)
        y = b.conv("input", 3, c, self.stem_k, stride=2 if self.big else 1)
        if self.pool_stem:
            y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        for s, depth in enumerate(self.depths):
            cout = self.ch(self.stem * width * self.growth ** (s + (self.block == "bottleneck")))
            for j in range(depth):
                stride = 2 if (j == 0 and s > 0) else 1
                y = _staged_block(b, self.block, y, c, cout, stride, self.expansion, self.dw_k)
                c = cout
        if self.head:
            y = b.conv(y, c, self.head, 1, act="Relu6")
            c = self.head
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
        return b.model([1, 3, self.size, self.size], b.linear(y, c, self.classes), "")


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
