"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from search_spaces import CompressionConfig, CompressionSpace

_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,3}", fullmatch=True)


@st.composite
def space_params(draw: st.DrawFn, space: CompressionSpace) -> dict[str, Any]:
    """Trial params for ``space``: one value per parameter, drawn from its choices."""
    params: dict[str, Any] = {}
    for group in space.groups.values():
        params[f"width.{group.name}"] = draw(st.sampled_from(group.choices))
    for block in space.blocks:
        params[f"drop.{block}"] = draw(st.booleans())
    for layer, choices in space.ranks.items():
        params[f"rank.{layer}"] = draw(st.sampled_from(choices))
    for layer, choices in space.bits.items():
        params[f"bits.{layer}"] = draw(st.sampled_from(choices))
    return params


def space_configs(space: CompressionSpace) -> st.SearchStrategy[CompressionConfig]:
    """Valid configs of ``space``, rebuilt from drawn params the way a stored trial is."""
    return space_params(space).map(space.config_from_params)


def configs() -> st.SearchStrategy[CompressionConfig]:
    """Arbitrary configs (not tied to a space), for serialization properties."""
    return st.builds(
        CompressionConfig,
        widths=st.dictionaries(_names, st.integers(1, 4096), max_size=5),
        ranks=st.dictionaries(_names, st.none() | st.integers(1, 512), max_size=4),
        bits=st.dictionaries(_names, st.sampled_from([32, 8, 4]), max_size=4),
        dropped_blocks=st.frozensets(_names, max_size=3),
    )
