"""The bundled model families: a ResNet-style and a MobileNetV2-style CNN.

Both are written for ``torch.fx``: plain modules, no data-dependent control flow, and each
residual block is one module whose forward is ``out = f(x) + shortcut(x)`` (ResNet blocks
apply one ReLU module after the add). Layer names are stable and dotted
(``layer2.0.conv1``), which compression configs use as keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "MODELS",
    "BasicBlock",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
    "build_model",
    "count_macs",
    "count_params",
]


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, added to a shortcut, then ReLU.

    The shortcut is ``nn.Identity`` when shape is kept, else a strided 1x1 conv + BN.

    Args:
        cin: Input channels.
        cout: Output channels.
        stride: Stride of the first conv (and of the shortcut).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.shortcut: nn.Module
        if stride != 1 or cin != cout:
            conv, bn = _conv_bn(cin, cout, 1, stride)
            self.shortcut = nn.Sequential(conv, bn)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, H/stride, W/stride)."""
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        out = out + self.shortcut(x)
        result: torch.Tensor = self.relu2(out)
        return result


class ResNet(nn.Module):
    """A small ResNet for single-channel images.

    Layout: ``stem`` (3x3 conv+BN+ReLU), ``layer1..layerK`` (``blocks`` basic blocks each; the
    first block of every layer after the first has stride 2), global average ``pool``,
    ``flatten``, ``fc``.

    Args:
        widths: Channels of each layer (the stem has ``widths[0]``).
        blocks: Basic blocks per layer.
        in_channels: Input channels.
        num_classes: Output logits.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 2,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        conv, bn = _conv_bn(in_channels, widths[0], 3)
        self.stem = nn.Sequential(conv, bn, nn.ReLU())
        cin = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = [
                BasicBlock(cin if j == 0 else width, width, stride if j == 0 else 1)
                for j in range(blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            cin = width
        self.num_layers = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_classes) logits."""
        x = self.stem(x)
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        logits: torch.Tensor = self.fc(self.flatten(self.pool(x)))
        return logits


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection.

    With stride 1 and ``cin == cout`` the input is added to the output (``use_residual``, a
    constant, so tracing sees a fixed graph); otherwise the block has no add. With
    ``expand == 1`` there is no expansion conv.

    Args:
        cin: Input channels.
        cout: Output channels.
        stride: Stride of the depthwise conv.
        expand: Expansion factor of the hidden width.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.extend([*_conv_bn(cin, hidden, 1), nn.ReLU6()])
        layers.extend([*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()])
        layers.extend(_conv_bn(hidden, cout, 1))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, H/stride, W/stride)."""
        out: torch.Tensor = self.conv(x)
        if self.use_residual:
            out = out + x
        return out


class MobileNetV2(nn.Module):
    """A small MobileNetV2 for single-channel images.

    Layout: ``stem`` (3x3 conv+BN+ReLU6), ``features`` (inverted residuals), ``head``
    (1x1 conv+BN+ReLU6), global average ``pool``, ``flatten``, ``fc``.

    Args:
        stem: Stem channels.
        settings: One ``(expand, channels, repeats, stride)`` row per stage, as in the paper.
        head: Channels of the last 1x1 conv.
        in_channels: Input channels.
        num_classes: Output logits.
    """

    def __init__(
        self,
        stem: int = 16,
        settings: Sequence[tuple[int, int, int, int]] = (
            (1, 16, 1, 1),
            (4, 24, 2, 2),
            (4, 48, 3, 2),
            (4, 64, 2, 1),
        ),
        head: int = 256,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, stem, 3), nn.ReLU6())
        blocks: list[nn.Module] = []
        cin = stem
        for expand, channels, repeats, stride in settings:
            for j in range(repeats):
                blocks.append(InvertedResidual(cin, channels, stride if j == 0 else 1, expand))
                cin = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, head, 1), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_classes) logits."""
        x = self.head(self.features(self.stem(x)))
        logits: torch.Tensor = self.fc(self.flatten(self.pool(x)))
        return logits


#: Model family name -> constructor (keyword arguments as in the class).
MODELS: dict[str, Callable[..., nn.Module]] = {"resnet": ResNet, "mobilenetv2": MobileNetV2}


def build_model(family: str, **kwargs: Any) -> nn.Module:
    """Construct the model ``family`` ("resnet" or "mobilenetv2") with ``kwargs``.

    Raises:
        ValueError: for an unknown family, listing the known ones.
    """
    try:
        constructor = MODELS[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODELS)}.") from None
    return constructor(**kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``example_input`` (convs and linears only)."""
    total = 0

    def _hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return total
