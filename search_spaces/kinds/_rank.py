"""Low-rank factorization: truncated SVD of Linear and Conv2d layers into two layers.

Config key ``ranks`` (layer -> rank, ``None`` = not factorized); parameters ``rank.<layer>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from search_spaces._apply import factorize, replace_module, saves_compute, weight_of
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


@register_kind
class RankKind(CompressionKind):
    """Factorizable layers with their rank choices (``None`` first).

    Ranks are offered at a quarter and half of each layer's break-even rank, rounded down to
    the alignment. Applied after widths and block removal: a rank that no longer saves MACs
    once the layer's channels were cut leaves that layer unfactorized.
    """

    name = "rank"
    key = "ranks"
    order = 300
    label = "factorizable"
    builtin = True
    may_run_slower = True

    @classmethod
    def from_json(cls, data: Any) -> Any:
        return cls.freeze({k: None if v is None else int(v) for k, v in data.items()})

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        ranks = _rank_choices(space.trace.layer_macs, space.model, space.align)
        self._full_ranks = {
            p: min(w.shape[0], w[0].numel())
            for p in ranks
            if (w := weight_of(space.model.get_submodule(p))) is not None
        }
        return ranks

    def full_rank(self, layer: str) -> int:
        """The rank of ``layer``'s unfactorized weight."""
        return self._full_ranks[layer]

    def smallest(self) -> dict[str, int | None]:
        return {k: c[1] if len(c) > 1 else None for k, c in self.choices.items()}

    def apply(
        self, model: nn.Module, value: Mapping[str, int | None], ctx: ApplyContext
    ) -> nn.Module:
        for layer, rank in value.items():
            if rank is None:
                continue
            try:
                mod = model.get_submodule(layer)
            except AttributeError:  # inside a dropped block
                continue
            if saves_compute(rank, mod):
                replace_module(model, layer, factorize(mod, rank))
        return model

    def effective(self, model: nn.Module) -> dict[str, int]:
        """Rank of each factorized layer of an applied ``model`` (layer path -> rank)."""
        ranks = {}
        for layer in self.choices:
            try:
                mod = model.get_submodule(layer)
            except AttributeError:
                continue
            if isinstance(mod, nn.Sequential) and len(mod) == 2:
                ranks[layer] = int(weight_of(mod[0]).shape[0])
        return ranks

    def summary(self, value: Mapping[str, int | None]) -> list[str]:
        return [f"{sum(r is not None for r in value.values())} low-rank"]

    def describe(self) -> list[str]:
        rows = [(k, format_choices(c)) for k, c in self.choices.items()]
        return table(("factorizable layer", "rank choices"), rows)


def _rank_choices(
    layer_macs: Mapping[str, int], model: nn.Module, align: int
) -> dict[str, tuple[Any, ...]]:
    ranks: dict[str, tuple[Any, ...]] = {}
    for path in layer_macs:
        mod = model.get_submodule(path)
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            continue
        weight = weight_of(mod)
        out_dim, fan_in = weight.shape[0], weight[0].numel()
        break_even = fan_in * out_dim / (fan_in + out_dim)
        offered = {int(break_even * f) // align * align for f in (0.25, 0.5)} - {0}
        offered = {r for r in offered if saves_compute(r, mod)}
        if offered:
            ranks[path] = (None, *sorted(offered))
    return ranks
