"""Channel widths: structured pruning of channel groups, importance-ranked.

Config key ``widths`` (channel group -> kept channels); parameters ``width.<group>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search_spaces._apply import kept_channels, slice_layer
from search_spaces.kinds._base import (
    ApplyContext,
    CompressionKind,
    SpaceContext,
    format_choices,
    register_kind,
    table,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import optuna
    from torch import nn

    from search_spaces._trace import TraceResult


@dataclass(frozen=True)
class ChannelGroup:
    """Layers whose output channels are cut together.

    Attributes:
        name: the group's name (its first producing layer's path).
        layers: paths of the Conv2d/Linear layers that produce these channels.
        channels: channels in the base model.
        choices: kept-channel counts offered (multiples of ``align``, ascending).
    """

    name: str
    layers: tuple[str, ...]
    channels: int
    choices: tuple[int, ...]


@register_kind
class WidthKind(CompressionKind):
    """Kept channels per channel group; cut first, while every layer is still in place.

    Attributes:
        groups: channel groups offering more than one width, by name.
        align: the channel step.
    """

    name = "width"
    key = "widths"
    order = 100
    label = "groups"
    builtin = True

    @classmethod
    def from_json(cls, data: Any) -> Any:
        return cls.freeze({k: int(v) for k, v in data.items()})

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        self.align = space.align
        self._trace = space.trace
        self.groups, frozen, self._roots = _channel_groups(space.trace, space.align)
        self.frozen += frozen
        return {g.name: g.choices for g in self.groups.values()}

    def base_choice(self, point: str) -> Any:
        return self.groups[point].channels

    def smallest(self) -> dict[str, int]:
        return {g.name: g.choices[0] for g in self.groups.values()}

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> dict[str, int]:
        widths = {}
        for g in self.groups.values():
            if g.channels % self.align == 0:
                high = g.choices[-1]
                widths[g.name] = trial.suggest_int(
                    self.param(g.name), g.choices[0], high, step=self.align
                )
            else:
                widths[g.name] = trial.suggest_categorical(self.param(g.name), list(g.choices))
        return widths

    def hint(self, point: str) -> str:
        g = self.groups[point]
        return (
            f"multiples of {self.align} from {g.choices[0]} to {g.choices[-1]}"
            + (f" or {g.channels}" if g.channels % self.align else "")
            + f" (base {g.channels})"
        )

    def apply(self, model: nn.Module, value: Mapping[str, int], ctx: ApplyContext) -> nn.Module:
        """Keep the channels with the highest importance summed over each group's producers."""
        widths = {self._roots[g]: w for g, w in value.items() if w < self.groups[g].channels}
        kept = kept_channels(ctx.base, self._trace, widths, ctx.importance)
        for info in self._trace.layers.values():
            slice_layer(model.get_submodule(info.path), info, self._trace, kept)
        return model

    def summary(self, value: Mapping[str, int]) -> list[str]:
        base = sum(g.channels for g in self.groups.values()) or 1
        kept = sum(value.get(g.name, g.channels) for g in self.groups.values())
        return [f"width {kept / base:.2f}"]

    def describe(self) -> list[str]:
        rows = [
            (g.name, _short(g.layers), str(g.channels), format_choices(g.choices))
            for g in self.groups.values()
        ]
        return ["channel groups:", *table(("group", "layers", "channels", "choices"), rows)]


def _short(layers: tuple[str, ...]) -> str:
    return ", ".join(layers) if len(layers) <= 3 else f"{layers[0]}, ... (+{len(layers) - 1})"


def _channel_groups(
    trace: TraceResult, align: int
) -> tuple[dict[str, ChannelGroup], list[tuple[str, str]], dict[str, int]]:
    producers: dict[int, list[str]] = {}
    for info in trace.layers.values():
        if info.kind in ("conv", "linear"):
            producers.setdefault(trace.find(info.out.segments[0]), []).append(info.path)
    groups, frozen, roots = {}, [], {}
    for root, layers in producers.items():
        reasons = trace.frozen_reasons(root)
        size = trace.sizes[root]
        if reasons:
            frozen.append((", ".join(layers), "; ".join(dict.fromkeys(reasons))))
            continue
        choices = tuple(sorted({*range(align, size + 1, align), size}))
        if len(choices) > 1:
            groups[layers[0]] = ChannelGroup(layers[0], tuple(layers), size, choices)
            roots[layers[0]] = root
    return groups, frozen, roots
