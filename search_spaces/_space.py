"""The compression space of one model: its decision points, their choices, and ``apply``."""

from __future__ import annotations

import copy
import difflib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from search_spaces._apply import (
    Importance,
    factorize,
    kept_channels,
    l1_importance,
    replace_module,
    saves_compute,
    slice_layer,
    weight_of,
)
from search_spaces._config import CompressionConfig
from search_spaces._errors import InvalidConfigError
from search_spaces._trace import TraceResult, analyze_graph

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)
SUPPORTED_BITS = (32, 8, 4)


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


def _closest(name: str, names: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {near[0]!r}?" if near else ""


class CompressionSpace:
    """Named decision points of one model, each with finite choices.

    Built by :func:`analyze`, never by hand. Parameter names sampled from a trial are
    ``width.<group>``, ``drop.<block>``, ``rank.<layer>`` and ``bits.<layer>``; the same set in
    every trial.

    Attributes:
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
        self.groups, self.frozen, self._roots = _channel_groups(trace, align)
        self.blocks = tuple(trace.blocks)
        self.ranks = _rank_choices(trace, model, align)
        self.bits = _bit_choices(trace, model, bits)
        self.frozen += [(path, f"not traced into: {why}") for path, why in trace.leaves.items()]
        self._full_ranks = {
            p: min(w.shape[0], w[0].numel())
            for p in self.ranks
            if (w := weight_of(model.get_submodule(p))) is not None
        }
        self.base_macs = sum(trace.layer_macs.values())
        self.base_params = sum(p.numel() for p in model.parameters())

    @property
    def quantizable_layers(self) -> tuple[str, ...]:
        """Paths of the layers whose bit-width can change."""
        return tuple(self.bits)

    def identity(self) -> CompressionConfig:
        """The config that reproduces the base model."""
        return CompressionConfig(
            widths={g.name: g.channels for g in self.groups.values()},
            ranks=dict.fromkeys(self.ranks),
            bits=dict.fromkeys(self.bits, 32),
        )

    def uniform(
        self, *, width: float = 1.0, rank: float | None = None, bits: int = 32
    ) -> CompressionConfig:
        """Same choice everywhere: a baseline.

        Args:
            width: kept fraction of every group's channels, rounded to the alignment.
            rank: fraction of each layer's full rank; the nearest offered rank at or below it
                (``None`` where none is offered).
            bits: bit-width of every layer that offers it; others take the nearest higher one.
        """
        if not 0 < width <= 1:
            raise InvalidConfigError(f"width must be in (0, 1], got {width}. Use 0.5 for half.")
        widths = {g.name: _nearest(g.choices, width * g.channels) for g in self.groups.values()}
        ranks = {k: _rank_at(c, rank, self._full_rank(k)) for k, c in self.ranks.items()}
        chosen = {
            k: min((b for b in c if b >= bits), default=max(c)) for k, c in self.bits.items()
        }
        return CompressionConfig(widths=widths, ranks=ranks, bits=chosen)

    def smallest(self) -> CompressionConfig:
        """The cheapest config: narrowest widths, every block dropped, lowest rank and bits."""
        return CompressionConfig(
            widths={g.name: g.choices[0] for g in self.groups.values()},
            ranks={k: c[1] if len(c) > 1 else None for k, c in self.ranks.items()},
            bits={k: min(c) for k, c in self.bits.items()},
            dropped_blocks=frozenset(self.blocks),
        )

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> CompressionConfig:
        """Draw a config through ``trial.suggest_*`` only, with stable dotted names."""
        widths = {}
        for g in self.groups.values():
            if g.channels % self.align == 0:
                high = g.choices[-1]
                widths[g.name] = trial.suggest_int(
                    f"width.{g.name}", g.choices[0], high, step=self.align
                )
            else:
                widths[g.name] = trial.suggest_categorical(f"width.{g.name}", list(g.choices))
        dropped = {b for b in self.blocks if trial.suggest_categorical(f"drop.{b}", [False, True])}
        ranks = {k: trial.suggest_categorical(f"rank.{k}", list(c)) for k, c in self.ranks.items()}
        bits = {k: trial.suggest_categorical(f"bits.{k}", list(c)) for k, c in self.bits.items()}
        return CompressionConfig(widths, ranks, bits, frozenset(dropped))

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
                + _closest(unknown[0], expected)
            )
        try:
            config = self.sample(optuna.trial.FixedTrial(dict(params)))
        except ValueError as exc:
            raise InvalidConfigError(f"cannot rebuild the config: {exc}") from exc
        self.validate(config)
        return config

    def param_names(self) -> list[str]:
        """Names of the parameters :meth:`sample` suggests, in order."""
        return (
            [f"width.{g}" for g in self.groups]
            + [f"drop.{b}" for b in self.blocks]
            + [f"rank.{k}" for k in self.ranks]
            + [f"bits.{k}" for k in self.bits]
        )

    def validate(self, config: CompressionConfig) -> None:
        """Check every key and value of ``config`` against this space.

        Raises:
            InvalidConfigError: naming the key, the value and the allowed choices.
        """
        allowed_widths = {g.name: g.choices for g in self.groups.values()}
        _check_choices("widths", config.widths, allowed_widths, self._width_hint)
        _check_choices("ranks", config.ranks, self.ranks, lambda k: f"{list(self.ranks[k])}")
        _check_choices("bits", config.bits, self.bits, lambda k: f"{list(self.bits[k])}")
        for block in sorted(config.dropped_blocks - set(self.blocks)):
            raise InvalidConfigError(
                f"dropped_blocks names {block!r}, which is not a removable block; removable "
                f"blocks: {list(self.blocks)}." + _closest(block, self.blocks)
            )

    def _width_hint(self, key: str) -> str:
        g = self.groups[key]
        return (
            f"multiples of {self.align} from {g.choices[0]} to {g.choices[-1]}"
            + (f" or {g.channels}" if g.channels % self.align else "")
            + f" (base {g.channels})"
        )

    def _full_rank(self, layer: str) -> int:
        return self._full_ranks[layer]

    def apply(
        self, model: nn.Module, config: CompressionConfig, *, importance: Importance | None = None
    ) -> nn.Module:
        """A new, physically smaller copy of ``model``; ``model`` is left untouched.

        Channels are cut first (keeping those with the highest ``importance`` summed over each
        group's producing layers), then dropped blocks become ``nn.Identity`` and factorized
        layers become two-layer ``nn.Sequential``. A rank that no longer saves MACs after the
        layer's channels were cut leaves that layer unfactorized.
        """
        self.validate(config)
        new = copy.deepcopy(model)
        widths = {
            self._roots[g]: w for g, w in config.widths.items() if w < self.groups[g].channels
        }
        kept = kept_channels(model, self._trace, widths, importance or self.importance)
        for info in self._trace.layers.values():
            slice_layer(new.get_submodule(info.path), info, self._trace, kept)
        for block in sorted(config.dropped_blocks):
            replace_module(new, block, nn.Identity())
        for layer, rank in config.ranks.items():
            if rank is not None and not _in_dropped(layer, config.dropped_blocks):
                mod = new.get_submodule(layer)
                if saves_compute(rank, mod):
                    replace_module(new, layer, factorize(mod, rank))
        return new

    def effective_ranks(self, model: nn.Module) -> dict[str, int]:
        """Rank of each factorized layer of an applied ``model`` (layer path -> rank)."""
        ranks = {}
        for layer in self.ranks:
            try:
                mod = model.get_submodule(layer)
            except AttributeError:
                continue
            if isinstance(mod, nn.Sequential) and len(mod) == 2:
                ranks[layer] = int(weight_of(mod[0]).shape[0])
        return ranks

    def size(self) -> int:
        """Number of distinct configs."""
        counts = [len(g.choices) for g in self.groups.values()] + [2] * len(self.blocks)
        counts += [len(c) for c in self.ranks.values()] + [len(c) for c in self.bits.values()]
        return math.prod(counts)

    def summarize(self, config: CompressionConfig) -> str:
        """One line: ``"width 0.62, 3 blocks dropped, 14/20 layers int8, 2 low-rank"``."""
        base = sum(g.channels for g in self.groups.values()) or 1
        kept = sum(config.widths.get(g.name, g.channels) for g in self.groups.values())
        int8 = sum(1 for b in config.bits.values() if b == 8)
        int4 = sum(1 for b in config.bits.values() if b == 4)
        parts = [
            f"width {kept / base:.2f}",
            f"{len(config.dropped_blocks)} blocks dropped",
            f"{int8}/{len(self.bits)} layers int8",
        ]
        if int4:
            parts.append(f"{int4} int4")
        parts.append(f"{sum(r is not None for r in config.ranks.values())} low-rank")
        return ", ".join(parts)

    def describe(self) -> str:
        """The space as a table, with its size and the base model's MACs and parameters."""
        return describe(self)

    def __repr__(self) -> str:
        return (
            f"CompressionSpace({self.model_name}: {len(self.groups)} groups, "
            f"{len(self.blocks)} blocks, {len(self.ranks)} factorizable, "
            f"{len(self.bits)} quantizable, {len(self.frozen)} frozen)"
        )


def _in_dropped(layer: str, dropped: frozenset[str]) -> bool:
    return any(layer.startswith(b + ".") for b in dropped)


def _nearest(choices: Sequence[int], target: float) -> int:
    return int(min(choices, key=lambda c: (abs(c - target), c)))


def _rank_at(choices: Sequence[int | None], fraction: float | None, full: int) -> int | None:
    if fraction is None:
        return None
    below = [c for c in choices if c is not None and c <= fraction * full]
    return max(below) if below else None


def _check_choices(
    field: str, values: Mapping[str, Any], allowed: Mapping[str, Sequence[Any]], hint: Any
) -> None:
    for key, value in values.items():
        if key not in allowed:
            raise InvalidConfigError(
                f"{field} names {key!r}, which this space does not have; valid keys: "
                f"{sorted(allowed)}." + _closest(key, allowed)
            )
        if value not in allowed[key] or isinstance(value, bool):
            raise InvalidConfigError(
                f"{field}[{key!r}] = {value!r} is not offered; allowed: {hint(key)}."
            )


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


def _rank_choices(trace: TraceResult, model: nn.Module, align: int) -> dict[str, tuple[Any, ...]]:
    ranks: dict[str, tuple[Any, ...]] = {}
    for path in trace.layer_macs:
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


def _bit_choices(
    trace: TraceResult, model: nn.Module, bits: Sequence[int]
) -> dict[str, tuple[int, ...]]:
    bad = [b for b in bits if b not in SUPPORTED_BITS]
    if bad or 32 not in bits:
        raise ValueError(
            f"bits must be a subset of {list(SUPPORTED_BITS)} containing 32, got {list(bits)}. "
            "Use bits=(32, 8) for fp32 and int8."
        )
    out = {}
    for path in trace.layer_macs:
        linear = isinstance(model.get_submodule(path), nn.Linear)
        choices = tuple(b for b in bits if b != 4 or linear)
        if len(choices) > 1:
            out[path] = choices
    return out


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


# -- the space as a table ------------------------------------------------------


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return lines + [fmt.format(*r) for r in rows]


def _choices(values: tuple[object, ...]) -> str:
    text = ", ".join(str(v) for v in values)
    if len(values) > 6:
        text = f"{values[0]}, {values[1]}, ..., {values[-1]} ({len(values)})"
    return text


def _short(layers: tuple[str, ...]) -> str:
    return ", ".join(layers) if len(layers) <= 3 else f"{layers[0]}, ... (+{len(layers) - 1})"


def describe(space: CompressionSpace) -> str:
    """Render groups, blocks, factorizable and quantizable layers, and what was frozen."""
    lines = [
        f"CompressionSpace of {space.model_name}: {space.size():.3g} configs, "
        f"base {space.base_macs / 1e6:.2f} MMACs, {space.base_params / 1e6:.3f} M params, "
        f"align {space.align}",
        "",
        "channel groups:",
    ]
    lines += _table(
        ("group", "layers", "channels", "choices"),
        [(g.name, _short(g.layers), str(g.channels), _choices(g.choices))
         for g in space.groups.values()],
    )  # fmt: skip
    lines += ["", f"removable blocks ({len(space.blocks)}): {', '.join(space.blocks) or '-'}", ""]
    lines += _table(
        ("factorizable layer", "rank choices"),
        [(k, _choices(c)) for k, c in space.ranks.items()],
    )
    bits_rows = [(k, _choices(c)) for k, c in space.bits.items()]
    lines += ["", *_table(("quantizable layer", "bits"), bits_rows)]
    lines += ["", f"frozen ({len(space.frozen)}):"]
    if space.frozen:
        lines += _table(("layers", "reason"), list(space.frozen))
    return "\n".join(lines)
