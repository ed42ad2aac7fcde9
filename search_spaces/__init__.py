"""What can be done to a model: trace it into a compression space and apply configs."""

from __future__ import annotations

from search_spaces._apply import Importance, l1_importance
from search_spaces._config import CompressionConfig
from search_spaces._errors import (
    InvalidConfigError,
    SearchSpaceError,
    TraceError,
    UnknownKindError,
)
from search_spaces._export import ExportedGraph, export_onnx
from search_spaces._space import CompressionSpace, analyze
from search_spaces.kinds import (
    ChannelGroup,
    CompressionKind,
    get_kind,
    kind_names,
    register_kind,
    unregister_kind,
)

__all__ = [
    "ChannelGroup",
    "CompressionConfig",
    "CompressionKind",
    "CompressionSpace",
    "ExportedGraph",
    "Importance",
    "InvalidConfigError",
    "SearchSpaceError",
    "TraceError",
    "UnknownKindError",
    "analyze",
    "export_onnx",
    "get_kind",
    "kind_names",
    "l1_importance",
    "register_kind",
    "unregister_kind",
]
