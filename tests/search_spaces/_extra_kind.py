"""A compression kind in one module: swap selected ReLUs for another activation.

Its export hook records the swaps in the ONNX graph's metadata, so a deployed graph says what
was changed. Registered by the tests' fixture, not on import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from search_spaces import CompressionKind
from search_spaces.kinds import ApplyContext, ExportContext, SpaceContext

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "hardswish": nn.Hardswish,
}
ONNX_OPS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "hardswish": "HardSwish"}
METADATA_KEY = "hwnas.activations"


class ActivationKind(CompressionKind):
    """Each ``nn.ReLU`` module may become a LeakyReLU or a Hardswish (``act.<module>``)."""

    name = "act"
    key = "activations"
    order = 250  # after block removal, before factorization
    label = "activations"

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        return {
            path: tuple(ACTIVATIONS)
            for path, module in space.model.named_modules()
            if type(module) is nn.ReLU
        }

    def apply(self, model: nn.Module, value: Mapping[str, str], ctx: ApplyContext) -> nn.Module:
        for path, activation in value.items():
            parent_path, _, leaf = path.rpartition(".")
            try:
                parent = model.get_submodule(parent_path)
            except AttributeError:  # inside a dropped block
                continue
            if activation != "relu" and hasattr(parent, leaf):
                setattr(parent, leaf, ACTIVATIONS[activation]())
        return model

    @classmethod
    def export(cls, value: Mapping[str, str], graph: Path, ctx: ExportContext) -> Path | None:
        if not value:
            return None
        proto = onnx.load(str(graph))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(dict(value), sort_keys=True)
        out = ctx.workdir / "activations.onnx"
        onnx.save(proto, str(out))
        return out
