from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from search_spaces import CompressionSpace, analyze

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/strategies.py
import archs

# name -> (factory, input side); widths are narrow so the suite stays fast on 2 cores.
ARCHS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "resnet18": (lambda: archs.ResNet18(width=16), 32),
    "mobilenetv2": (lambda: archs.MobileNetV2(width=0.25, last=64), 32),
    "vgg": (lambda: archs.VGGStyle(), 32),
    "squeezenet": (lambda: archs.SqueezeNetSmall(), 32),
    "shufflenetv2": (lambda: archs.ShuffleNetSmall(), 16),
}


class Built:
    def __init__(self, name: str) -> None:
        factory, side = ARCHS[name]
        torch.manual_seed(0)
        self.name = name
        self.model = archs.randomize_bn(factory())
        self.x = torch.randn(1, 3, side, side)
        self.batch = torch.randn(4, 3, side, side)
        self.space: CompressionSpace = analyze(self.model, self.x, bits=(32, 8, 4))


_CACHE: dict[str, Built] = {}


def built(name: str) -> Built:
    if name not in _CACHE:
        _CACHE[name] = Built(name)
    return _CACHE[name]


@pytest.fixture(params=sorted(ARCHS))
def arch(request: pytest.FixtureRequest) -> Built:
    return built(request.param)
