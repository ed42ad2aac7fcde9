"""What a device makes of an ONNX graph: devices, measurement, features, predictors.

This package never imports torch: it must run on a device that has only onnxruntime
and numpy (the measurement agent runs there).
"""

from __future__ import annotations

from latency_models._errors import (
    DuplicateNameError,
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
    UnknownNameError,
)
from latency_models._graph import GraphLike, graph_bytes, graph_hash, load_graph
from latency_models._home import home_dir
from latency_models._registry import Registry

__all__ = [
    "DuplicateNameError",
    "GraphLike",
    "IncompatibleArtifactError",
    "LatencyModelsError",
    "MeasurementError",
    "Registry",
    "UnknownNameError",
    "graph_bytes",
    "graph_hash",
    "home_dir",
    "load_graph",
]
