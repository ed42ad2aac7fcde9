"""The fx tracer: channel groups, followers, concat, frozen structures, trace errors."""

from __future__ import annotations

import pytest
import torch
from archs import randomize_bn
from conftest import built
from torch import nn

from search_spaces import TraceError, analyze


def test_residual_add_ties_every_conv_feeding_it() -> None:
    space = built("resnet18").space
    stem = space.groups["conv1"]
    assert set(stem.layers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    stage2 = next(g for g in space.groups.values() if "layer2.0.conv2" in g.layers)
    assert set(stage2.layers) == {"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"}
    assert space.blocks == ("layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1")


def test_depthwise_conv_follows_its_input() -> None:
    b = built("mobilenetv2")
    expand = b.space.groups["features.2.conv.0.0"]  # 1x1 expand; the depthwise conv follows it
    assert expand.layers == ("features.2.conv.0.0",)
    assert "features.2.conv.1.0" not in b.space.groups
    config = b.space.uniform(width=0.5)
    dw = b.space.apply(b.model, config).get_submodule("features.2.conv.1.0")
    kept = config.widths["features.2.conv.0.0"]
    assert dw.groups == dw.in_channels == dw.out_channels == kept
    assert dw.weight.shape == (kept, 1, 3, 3)


def test_concat_maps_channel_ranges() -> None:
    b = built("squeezenet")
    assert {"features.3.expand1x1", "features.3.expand3x3"} <= set(b.space.groups)
    widths = {**b.space.identity().widths, "features.3.expand1x1": 8, "features.3.expand3x3": 16}
    config = b.space.identity().__class__(widths=widths)
    model = b.space.apply(b.model, config)
    assert model.get_submodule("features.4.squeeze").in_channels == 24
    assert model(b.x).shape == b.model(b.x).shape


def test_flatten_into_linear_cuts_channel_times_spatial() -> None:
    b = built("vgg")
    config = b.space.uniform(width=0.5)
    model = b.space.apply(b.model, config)
    assert model.get_submodule("classifier.0").in_features == 32 * 4 * 4


def test_shuffle_unit_is_frozen_and_reported() -> None:
    space = built("shufflenetv2").space
    reasons = dict(space.frozen)
    assert any("chunk" in r for r in reasons.values())
    assert any("view" in r for r in reasons.values())
    assert "conv1.0" in reasons  # the split input cannot be cut
    assert "stage.0.branch2.0" in space.groups  # the branch's inner width still can
    assert "chunk" in space.describe()


def test_network_output_is_never_prunable() -> None:
    for name in ("resnet18", "vgg", "mobilenetv2"):
        space = built(name).space
        last = list(space.bits)[-1]
        assert all(last not in g.layers for g in space.groups.values())


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class _WithBadChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.odd = _DataDependent()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.odd(self.conv1(x)))
        return self.fc(self.conv3(x).mean([2, 3]))


class _Untraceable(_WithBadChild):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if x.mean() > 0:
            x = self.conv2(x)
        return self.fc(x.mean([2, 3]))


def test_untraceable_submodule_is_frozen_with_reason() -> None:
    model = _WithBadChild().eval()
    space = analyze(model, torch.randn(1, 3, 8, 8))
    frozen = dict(space.frozen)
    assert "odd" in frozen and "traced" in frozen["odd"]
    assert "conv2" in space.groups  # downstream of the frozen module, still prunable
    assert "conv1" not in space.groups
    out = space.apply(model, space.uniform(width=0.5))(torch.randn(1, 3, 8, 8))
    assert out.shape == (1, 4)


def test_untraceable_model_names_op_and_module() -> None:
    with pytest.raises(TraceError, match=r"x\.mean\(\) > 0.*in module '\(root\)'"):
        analyze(_Untraceable().eval(), torch.randn(1, 3, 8, 8))


def test_grouped_conv_is_frozen() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3, groups=4), nn.Conv2d(32, 16, 1),
        nn.Flatten(), nn.LazyLinear(2) if False else nn.Linear(16 * 4 * 4, 2),
    ).eval()  # fmt: skip
    space = analyze(model, torch.randn(1, 3, 8, 8))
    assert "0" not in space.groups and "1" not in space.groups
    assert "2" in space.groups
    assert any("grouped conv" in r for r in dict(space.frozen).values())


class _DenseLayer(nn.Module):
    """DenseNet layer (Huang et al. 2017): BN-ReLU-Conv, output concatenated to its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], 1)


class _DenseNetBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Sequential(_DenseLayer(16, 16), _DenseLayer(32, 16))
        self.norm = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.block(self.stem(x)))).mean([2, 3]))


def test_densenet_concat_through_batchnorm() -> None:
    torch.manual_seed(0)
    model = randomize_bn(_DenseNetBlock())
    x = torch.randn(2, 3, 8, 8)
    space = analyze(model, x[:1])
    assert list(space.groups) == ["stem", "block.0.conv", "block.1.conv"]
    torch.testing.assert_close(
        space.apply(model, space.identity())(x), model(x), atol=1e-6, rtol=0
    )
    small = space.apply(model, space.uniform(width=0.5))
    assert small.norm.num_features == small.fc.in_features == 24
    assert small.block[1].norm.num_features == 16 and small(x).shape == (2, 10)
