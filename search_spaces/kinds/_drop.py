"""Block removal: residual blocks replaced by identity.

Config key ``dropped_blocks`` (a set of block paths); parameters ``drop.<block>`` (bools).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from search_spaces._apply import replace_module
from search_spaces._errors import InvalidConfigError
from search_spaces.kinds._base import (
    ApplyContext,
    CompressionKind,
    SpaceContext,
    closest,
    register_kind,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import optuna


@register_kind
class DropKind(CompressionKind):
    """Residual blocks that may be dropped; a dropped block's layers are gone for later kinds."""

    name = "drop"
    key = "dropped_blocks"
    order = 200
    label = "blocks"
    builtin = True

    @classmethod
    def empty(cls) -> frozenset[str]:
        return frozenset()

    @classmethod
    def freeze(cls, value: Any) -> frozenset[str]:
        if isinstance(value, str):
            raise TypeError(
                "CompressionConfig.dropped_blocks must be a set of block paths, got the string "
                f"{value!r}; wrap it: frozenset({{{value!r}}})"
            )
        return frozenset(value)

    @classmethod
    def to_json(cls, value: frozenset[str]) -> list[str]:
        return sorted(value)

    @classmethod
    def from_json(cls, data: Any) -> frozenset[str]:
        return frozenset(data)

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        return {block: (False, True) for block in space.trace.blocks}

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> frozenset[str]:
        return frozenset(
            b for b in self.choices if trial.suggest_categorical(self.param(b), [False, True])
        )

    def params_of(self, value: frozenset[str]) -> dict[str, Any]:
        return {self.param(b): b in value for b in self.choices}

    def identity(self) -> frozenset[str]:
        return frozenset()

    def smallest(self) -> frozenset[str]:
        return frozenset(self.choices)

    def validate(self, value: frozenset[str]) -> None:
        blocks = list(self.choices)
        for block in sorted(value - set(blocks)):
            raise InvalidConfigError(
                f"dropped_blocks names {block!r}, which is not a removable block; removable "
                f"blocks: {blocks}." + closest(block, blocks)
            )

    def apply(self, model: nn.Module, value: frozenset[str], ctx: ApplyContext) -> nn.Module:
        for block in sorted(value):
            replace_module(model, block, nn.Identity())
        return model

    def summary(self, value: frozenset[str]) -> list[str]:
        return [f"{len(value)} blocks dropped"]

    def describe(self) -> list[str]:
        return [f"removable blocks ({len(self.choices)}): {', '.join(self.choices) or '-'}"]
