"""What can be done to a model: trace it into a compression space and apply configs."""

from __future__ import annotations

from search_spaces._apply import Importance, l1_importance
from search_spaces._config import CompressionConfig
from search_spaces._errors import InvalidConfigError, SearchSpaceError, TraceError
from search_spaces._export import ExportedGraph, export_onnx
from search_spaces._space import ChannelGroup, CompressionSpace, analyze

__all__ = [
    "ChannelGroup",
    "CompressionConfig",
    "CompressionSpace",
    "ExportedGraph",
    "Importance",
    "InvalidConfigError",
    "SearchSpaceError",
    "TraceError",
    "analyze",
    "export_onnx",
    "l1_importance",
]
