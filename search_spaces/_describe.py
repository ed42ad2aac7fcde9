"""Text table of a :class:`~search_spaces.CompressionSpace`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search_spaces._space import CompressionSpace


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
