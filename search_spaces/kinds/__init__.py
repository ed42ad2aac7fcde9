"""Compression kinds: the registry and the built-in kinds (width, drop, rank, bits).

Importing this package registers the built-in kinds. A new kind is one module that subclasses
:class:`CompressionKind` and decorates it with :func:`register_kind`.
"""

from __future__ import annotations

from search_spaces.kinds._base import (
    ApplyContext,
    CompressionKind,
    ExportContext,
    SpaceContext,
    get_kind,
    kind_for_key,
    kind_names,
    register_kind,
    registered_kinds,
    unregister_kind,
)
from search_spaces.kinds._bits import BitsKind
from search_spaces.kinds._drop import DropKind
from search_spaces.kinds._rank import RankKind
from search_spaces.kinds._width import ChannelGroup, WidthKind

__all__ = [
    "ApplyContext",
    "BitsKind",
    "ChannelGroup",
    "CompressionKind",
    "DropKind",
    "ExportContext",
    "RankKind",
    "SpaceContext",
    "WidthKind",
    "get_kind",
    "kind_for_key",
    "kind_names",
    "register_kind",
    "registered_kinds",
    "unregister_kind",
]
