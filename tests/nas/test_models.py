from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from nas.tasks._models import (
    BasicBlock,
    InvertedResidual,
    MobileNetV2,
    ResNet,
    build_model,
    count_macs,
    count_params,
)

MODELS = {
    "mnist-resnet": (lambda: ResNet((16, 32, 64), 2), (2, 1, 28, 28)),
    "mnist-mobilenetv2": (lambda: MobileNetV2(), (2, 1, 28, 28)),
    "digits-resnet": (lambda: ResNet((16, 32), 1), (2, 1, 8, 8)),
    "digits-mobilenetv2": (
        lambda: MobileNetV2(16, ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 1, 1)), 64),
        (2, 1, 8, 8),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_fx_trace(name: str) -> None:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    out = model(x)
    assert out.shape == (shape[0], 10)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)
    # residual adds show up as plain add nodes in the traced graph
    adds = [n for n in traced.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert adds, "expected residual additions in the traced graph"


def test_residual_blocks_are_modules() -> None:
    resnet = ResNet((16, 32, 64), 2)
    blocks = [m for m in resnet.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 6
    identity = [b for b in blocks if isinstance(b.shortcut, nn.Identity)]
    assert len(identity) == 4  # layer1.0, layer1.1, layer2.1, layer3.1
    mbv2 = MobileNetV2()
    residual = [m for m in mbv2.modules() if isinstance(m, InvertedResidual) and m.use_residual]
    assert len(residual) >= 3
    depthwise = [
        m for m in mbv2.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1
    ]
    assert depthwise


def test_counts() -> None:
    model = ResNet((16, 32, 64), 2)
    assert count_params(model) == 174970
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == pytest.approx(20.18e6, rel=0.01)


def test_build_model_unknown_family() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'vgg'; known: \['mobilenetv2'"):
        build_model("vgg")
    assert isinstance(build_model("resnet", widths=(8,), blocks=1), ResNet)
