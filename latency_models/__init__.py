"""What a device makes of an ONNX graph: devices, measurement, features, predictors.

This package never imports torch: it must run on a device that has only onnxruntime
and numpy (the measurement agent runs there).
"""

from __future__ import annotations

from latency_models._check import REFERENCE_GRAPHS, CheckResult, check_device
from latency_models._errors import (
    DuplicateNameError,
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
    UnknownNameError,
)
from latency_models._graph import GraphLike, graph_bytes, graph_hash, load_graph
from latency_models._home import home_dir
from latency_models._measure import (
    AgentAuthError,
    AgentBusyError,
    AgentError,
    AgentTimeoutError,
    AgentUnreachableError,
    GraphRejectedError,
    Measurement,
    measure,
)
from latency_models._meters import EnergyMeter, NvmlMeter, RaplMeter
from latency_models._registry import Registry
from latency_models._store import (
    MeasurementStore,
    StoreCorruptedError,
    StoredRecord,
    measure_cached,
)
from latency_models.devices import (
    DEVICES,
    DeviceSpec,
    add_device,
    get_device,
    list_devices,
    remove_device,
)

__all__ = [
    "DEVICES",
    "REFERENCE_GRAPHS",
    "AgentAuthError",
    "AgentBusyError",
    "AgentError",
    "AgentTimeoutError",
    "AgentUnreachableError",
    "CheckResult",
    "DeviceSpec",
    "EnergyMeter",
    "GraphRejectedError",
    "Measurement",
    "MeasurementStore",
    "NvmlMeter",
    "RaplMeter",
    "StoreCorruptedError",
    "StoredRecord",
    "add_device",
    "check_device",
    "get_device",
    "list_devices",
    "measure",
    "measure_cached",
    "remove_device",
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
