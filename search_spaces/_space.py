"""The compression space of one model: its decision points, their choices, and ``apply``.

The decision points come from the registered compression kinds (:mod:`search_spaces.kinds`),
each bound to the traced model; the space samples, validates, applies and summarizes a config
by asking each kind in turn, in the kinds' order.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from search_spaces._apply import Importance, l1_importance
from search_spaces._config import CompressionConfig
from search_spaces._errors import InvalidConfigError
from search_spaces._trace import TraceResult, analyze_graph
from search_spaces.kinds._base import (
    ApplyContext,
    CompressionKind,
    SpaceContext,
    closest,
    registered_kinds,
    table,
)
from search_spaces.kinds._rank import RankKind
from search_spaces.kinds._width import ChannelGroup, WidthKind

if TYPE_CHECKING:
    import optuna

__all__ = ["ChannelGroup", "CompressionSpace", "analyze"]

_logger = logging.getLogger(__name__)


class CompressionSpace:
    """Named decision points of one model, each with finite choices.

    Built by :func:`analyze`, never by hand. Parameter names sampled from a trial are
    ``<kind>.<point>``: ``width.<group>``, ``drop.<block>``, ``rank.<layer>`` and
    ``bits.<layer>`` for the built-in kinds; the same set in every trial.

    Attributes:
        kinds: kind name -> the kind bound to this model, in the order they apply; a kind
            registered after the space was built is not among them.
        groups: channel groups offering more than one width.
        blocks: residual blocks that may be dropped.
        ranks: factorizable layers with their rank choices (``None`` first).
        bits: quantizable layers with their bit-width choices.
        frozen: what was frozen, with the reason (``(what, reason)`` pairs).
        base_macs: multiply-accumulates of the base model's Conv2d/Linear layers on the example.
        base_params: parameters of the base model.
    """

    def __init__(
        self,
        trace: TraceResult,
        *,
        model: nn.Module,
        align: int,
        bits: Sequence[int],
        importance: Importance = l1_importance,
    ) -> None:
        self._trace = trace
        self.align = align
        self.importance = importance
        self.model_name = type(model).__name__
        context = SpaceContext(trace=trace, model=model, align=align, bits=tuple(bits))
        self.kinds: dict[str, CompressionKind] = {k.name: k(context) for k in registered_kinds()}
        self._width = cast(WidthKind, self.kinds["width"])
        self._rank = cast(RankKind, self.kinds["rank"])
        self.groups: dict[str, ChannelGroup] = self._width.groups
        self.blocks = tuple(self.kinds["drop"].choices)
        self.ranks: dict[str, tuple[Any, ...]] = self._rank.choices
        self.bits: dict[str, tuple[int, ...]] = self.kinds["bits"].choices
        self.frozen = [f for kind in self.kinds.values() for f in kind.frozen]
        self.frozen += [(path, f"not traced into: {why}") for path, why in trace.leaves.items()]
        self.base_macs = sum(trace.layer_macs.values())
        self.base_params = sum(p.numel() for p in model.parameters())

    @property
    def quantizable_layers(self) -> tuple[str, ...]:
        """Paths of the layers whose bit-width can change."""
        return tuple(self.bits)

    def identity(self) -> CompressionConfig:
        """The config that reproduces the base model."""
        return CompressionConfig.from_values({k.key: k.identity() for k in self.kinds.values()})

    def uniform(
        self, *, width: float = 1.0, rank: float | None = None, bits: int = 32
    ) -> CompressionConfig:
        """Same choice everywhere: a baseline (other kinds keep the base model's values).

        Args:
            width: kept fraction of every group's channels, rounded to the alignment.
            rank: fraction of each layer's full rank; the nearest offered rank at or below it
                (``None`` where none is offered).
            bits: bit-width of every layer that offers it; others take the nearest higher one.
        """
        if not 0 < width <= 1:
            raise InvalidConfigError(f"width must be in (0, 1], got {width}. Use 0.5 for half.")
        widths = {g.name: _nearest(g.choices, width * g.channels) for g in self.groups.values()}
        ranks = {k: _rank_at(c, rank, self._rank.full_rank(k)) for k, c in self.ranks.items()}
        chosen = {
            k: min((b for b in c if b >= bits), default=max(c)) for k, c in self.bits.items()
        }
        return CompressionConfig(widths=widths, ranks=ranks, bits=chosen)

    def smallest(self) -> CompressionConfig:
        """The cheapest config: narrowest widths, every block dropped, lowest rank and bits."""
        return CompressionConfig.from_values({k.key: k.smallest() for k in self.kinds.values()})

    def cheapest_candidates(self) -> list[CompressionConfig]:
        """The configs one of which is the fastest on a device, :meth:`smallest` first.

        Which one depends on the device: on small layers int8 and factorized layers can run
        slower than fp32 and full rank, so each kind that ``may_run_slower`` is tried at its
        smallest and at the base model's value (others at their smallest); duplicates dropped.
        """
        smallest = {k.key: k.smallest() for k in self.kinds.values()}
        swing = [k for k in self.kinds.values() if k.may_run_slower and k.choices]
        out: list[CompressionConfig] = []
        for at_base in itertools.product((False, True), repeat=len(swing)):
            values = dict(smallest)
            values.update({k.key: k.identity() for k, b in zip(swing, at_base, strict=True) if b})
            config = CompressionConfig.from_values(values)
            if config not in out:
                out.append(config)
        return out

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> CompressionConfig:
        """Draw a config through ``trial.suggest_*`` only, with stable dotted names."""
        return CompressionConfig.from_values({k.key: k.sample(trial) for k in self.kinds.values()})

    def config_from_params(self, params: Mapping[str, Any]) -> CompressionConfig:
        """Rebuild a stored trial's config from its params (through ``optuna.trial.FixedTrial``).

        Raises:
            InvalidConfigError: a parameter is missing, unknown or not offered.
        """
        import optuna

        expected = set(self.param_names())
        unknown = sorted(set(params) - expected)
        if unknown:
            raise InvalidConfigError(
                f"unknown parameters {unknown}; this space has {sorted(expected)}."
                + closest(unknown[0], expected)
            )
        try:
            config = self.sample(optuna.trial.FixedTrial(dict(params)))
        except ValueError as exc:
            raise InvalidConfigError(f"cannot rebuild the config: {exc}") from exc
        self.validate(config)
        return config

    def params_of(self, config: CompressionConfig) -> dict[str, Any]:
        """The trial params that make :meth:`sample` return ``config`` (to enqueue it)."""
        self.validate(config)
        params: dict[str, Any] = {}
        for kind in self.kinds.values():
            params.update(kind.params_of(config.value(kind.key)))
        return params

    def param_names(self) -> list[str]:
        """Names of the parameters :meth:`sample` suggests, in order."""
        return [name for kind in self.kinds.values() for name in kind.param_names()]

    def validate(self, config: CompressionConfig) -> None:
        """Check every key and value of ``config`` against this space.

        Raises:
            InvalidConfigError: naming the key, the value and the allowed choices.
        """
        keys = {kind.key for kind in self.kinds.values()}
        for key in config.extra:
            if key not in keys:
                raise InvalidConfigError(
                    f"the config sets {key!r}, but the kind owning it was registered after this "
                    f"space was built; the space's kinds: {list(self.kinds)}. Analyze the model "
                    "again to offer it."
                )
        for kind in self.kinds.values():
            kind.validate(config.value(kind.key))

    def apply(
        self, model: nn.Module, config: CompressionConfig, *, importance: Importance | None = None
    ) -> nn.Module:
        """A new, physically smaller copy of ``model``; ``model`` is left untouched.

        The kinds apply in their order: channels are cut first (keeping those with the highest
        ``importance`` summed over each group's producing layers), then dropped blocks become
        ``nn.Identity`` and factorized layers become two-layer ``nn.Sequential``. A rank that
        no longer saves MACs after the layer's channels were cut leaves that layer
        unfactorized. Bit-widths take effect in :func:`~search_spaces.export_onnx`.
        """
        self.validate(config)
        new = copy.deepcopy(model)
        ctx = ApplyContext(base=model, importance=importance or self.importance)
        for kind in self.kinds.values():
            new = kind.apply(new, config.value(kind.key), ctx)
        return new

    def effective_ranks(self, model: nn.Module) -> dict[str, int]:
        """Rank of each factorized layer of an applied ``model`` (layer path -> rank)."""
        return self._rank.effective(model)

    def size(self) -> int:
        """Number of distinct configs."""
        return math.prod(kind.size() for kind in self.kinds.values())

    def summarize(self, config: CompressionConfig) -> str:
        """One line: ``"width 0.62, 3 blocks dropped, 14/20 layers int8, 2 low-rank"``."""
        kinds = sorted(self.kinds.values(), key=lambda k: k.summary_order or k.order)
        return ", ".join(part for k in kinds for part in k.summary(config.value(k.key)))

    def describe(self) -> str:
        """The space as a table, with its size and the base model's MACs and parameters."""
        lines = [
            f"CompressionSpace of {self.model_name}: {self.size():.3g} configs, "
            f"base {self.base_macs / 1e6:.2f} MMACs, {self.base_params / 1e6:.3f} M params, "
            f"align {self.align}",
        ]
        for kind in self.kinds.values():
            lines += ["", *kind.describe()]
        lines += ["", f"frozen ({len(self.frozen)}):"]
        if self.frozen:
            lines += table(("layers", "reason"), list(self.frozen))
        return "\n".join(lines)

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(k.choices)} {k.label or k.name}" for k in self.kinds.values())
        return f"CompressionSpace({self.model_name}: {counts}, {len(self.frozen)} frozen)"


def _nearest(choices: Sequence[int], target: float) -> int:
    return int(min(choices, key=lambda c: (abs(c - target), c)))


def _rank_at(choices: Sequence[int | None], fraction: float | None, full: int) -> int | None:
    if fraction is None:
        return None
    below = [c for c in choices if c is not None and c <= fraction * full]
    return max(below) if below else None


def analyze(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    align: int = 8,
    bits: Sequence[int] = (32, 8),
    importance: Importance = l1_importance,
) -> CompressionSpace:
    """Trace ``model`` into its compression space.

    Args:
        model: the trained model; it is not modified (tracing runs on a copy in eval mode).
        example_input: one input batch, e.g. shape ``(1, 3, 224, 224)``.
        align: channel and rank step the device likes (8 or 16).
        bits: bit-widths the device runs: 32, 8 (Conv2d/Linear) and 4 (Linear only).
        importance: channel score used by :meth:`CompressionSpace.apply` (L1 norm by default).

    Raises:
        TraceError: the model cannot be traced at all (names the op and the module path).
        ValueError: ``align`` < 1 or unsupported ``bits``.
    """
    if align < 1:
        raise ValueError(f"align must be a positive channel count, got {align}. Use 8 or 16.")
    model_copy = copy.deepcopy(model).eval()
    trace = analyze_graph(model_copy, example_input)
    space = CompressionSpace(trace, model=model, align=align, bits=bits, importance=importance)
    _logger.info("analyzed %s: %r", type(model).__name__, space)
    return space
