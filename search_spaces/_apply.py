"""Physical compression ops: channel slicing, low-rank factorization and block removal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from search_spaces._trace import LayerInfo, Layout, TraceResult

_logger = logging.getLogger(__name__)

Importance = Callable[[nn.Module], torch.Tensor]
"""Score each output channel of a Conv2d/Linear (higher = keep); shape ``(out_channels,)``."""


def weight_of(module: nn.Module) -> torch.Tensor:
    """The ``weight`` tensor of a Conv2d/Linear/BatchNorm."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


def _bias_of(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def l1_importance(module: nn.Module) -> torch.Tensor:
    """L1 norm of each output channel's weights (the default importance)."""
    return weight_of(module).detach().abs().flatten(1).sum(1).to(torch.float64)


def kept_channels(
    model: nn.Module,
    trace: TraceResult,
    widths: Mapping[int, int],
    importance: Importance,
) -> dict[int, torch.Tensor]:
    """Sorted channel indices to keep for each pruned space root.

    Args:
        model: the base model (scores are read from it).
        trace: the traced spaces and layers.
        widths: space root -> kept channels, for roots that lose channels.
        importance: per-producer channel score, summed over the group.
    """
    kept: dict[int, torch.Tensor] = {}
    for root, width in widths.items():
        score = torch.zeros(trace.sizes[root], dtype=torch.float64)
        for layer in trace.layers.values():
            if layer.kind in ("conv", "linear") and trace.find(layer.out.segments[0]) == root:
                score += importance(model.get_submodule(layer.path))
        kept[root] = torch.topk(score, width).indices.sort().values
    return kept


def layout_indices(
    trace: TraceResult, layout: Layout | None, kept: Mapping[int, torch.Tensor]
) -> torch.Tensor | None:
    """Indices to keep along a dim with this layout, or None when nothing is cut."""
    if layout is None or not any(trace.find(s) in kept for s in layout.segments):
        return None
    parts, offset = [], 0
    for seg in layout.segments:
        size = trace.sizes[seg]
        parts.append(kept.get(trace.find(seg), torch.arange(size)) + offset)
        offset += size
    idx = torch.cat(parts)
    if layout.inner > 1:
        idx = (idx[:, None] * layout.inner + torch.arange(layout.inner)).flatten()
    return idx


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)


def _slice_out(mod: nn.Module, idx: torch.Tensor) -> None:
    mod.weight = _param(weight_of(mod)[idx])
    bias = _bias_of(mod)
    if bias is not None:
        mod.bias = _param(bias[idx])


def _slice_bn(mod: nn.BatchNorm2d | nn.BatchNorm1d, idx: torch.Tensor) -> None:
    if mod.affine:
        _slice_out(mod, idx)
    for name in ("running_mean", "running_var"):
        stat = getattr(mod, name)
        setattr(mod, name, stat[idx].clone())
    mod.num_features = len(idx)


def slice_layer(
    mod: nn.Module, info: LayerInfo, trace: TraceResult, kept: Mapping[int, torch.Tensor]
) -> None:
    """Cut one layer's weights in place to the kept channels of its in and out dims."""
    out_idx = layout_indices(trace, info.out, kept)
    in_idx = layout_indices(trace, info.inp, kept)
    if info.kind == "bn" and out_idx is not None:
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            _slice_bn(mod, out_idx)
    elif info.kind == "dwconv" and out_idx is not None and isinstance(mod, nn.Conv2d):
        _slice_out(mod, out_idx)
        mod.in_channels = mod.out_channels = mod.groups = len(out_idx)
    elif info.kind in ("conv", "linear"):
        if out_idx is not None:
            _slice_out(mod, out_idx)
        if in_idx is not None:
            mod.weight = _param(weight_of(mod)[:, in_idx])
        _set_dims(mod)


def _set_dims(mod: nn.Module) -> None:
    shape = weight_of(mod).shape
    if isinstance(mod, nn.Conv2d):
        mod.out_channels = shape[0]
        mod.in_channels = shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = shape


def saves_compute(rank: int, mod: nn.Module) -> bool:
    """True when a rank-``rank`` factorization of ``mod`` costs fewer MACs than ``mod``."""
    weight = weight_of(mod)
    out_dim, fan_in = weight.shape[0], weight[0].numel()
    return 0 < rank <= min(out_dim, fan_in) and rank * (fan_in + out_dim) < fan_in * out_dim


def _svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(weight.detach().flatten(1).to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    first = (root[:, None] * vh[:rank]).to(weight.dtype)
    second = (u[:, :rank] * root[None, :]).to(weight.dtype)
    return first, second


def factorize(mod: nn.Module, rank: int) -> nn.Sequential:
    """Truncated-SVD factorization of a Linear or a kxk Conv2d (groups 1) into two layers.

    Linear(in, out) -> Linear(in, r, bias=False), Linear(r, out); Conv2d kxk -> kxk conv into r
    channels (same stride, padding, dilation) then a 1x1 conv.
    """
    weight = weight_of(mod)
    first_w, second_w = _svd(weight, rank)
    bias = _bias_of(mod)
    if isinstance(mod, nn.Linear):
        first: nn.Module = nn.Linear(mod.in_features, rank, bias=False)
        second: nn.Module = nn.Linear(rank, mod.out_features, bias=bias is not None)
        first.weight = _param(first_w)
        second.weight = _param(second_w)
    elif isinstance(mod, nn.Conv2d) and mod.groups == 1:
        first = nn.Conv2d(mod.in_channels, rank, 1, bias=False)
        for attr in (
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "padding_mode",
            "_reversed_padding_repeated_twice",
        ):
            setattr(first, attr, getattr(mod, attr))
        second = nn.Conv2d(rank, mod.out_channels, 1, bias=bias is not None)
        first.weight = _param(first_w.reshape(rank, *weight.shape[1:]))
        second.weight = _param(second_w[:, :, None, None])
    else:
        raise TypeError(f"cannot factorize {type(mod).__name__}; only Linear and Conv2d")
    if bias is not None:
        second.bias = _param(bias)
    return nn.Sequential(first, second).train(mod.training)


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at dotted ``path`` inside ``model``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)
