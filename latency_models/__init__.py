"""What a device makes of an ONNX graph: devices, measurement, features, predictors.

This package never imports torch: it must run on a device that has only onnxruntime
and numpy (the measurement agent runs there).
"""

from __future__ import annotations

from latency_models._check import REFERENCE_GRAPHS, CheckResult, check_device
from latency_models._energy_model import ENERGY_SOURCE, estimate_energy_mj
from latency_models._errors import (
    DuplicateNameError,
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
    UnknownNameError,
)
from latency_models._features import (
    FEATURE_VERSION,
    GraphFeatures,
    KernelFeatures,
    graph_features,
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
from latency_models._memory import MemoryFootprint, memory_footprint
from latency_models._meters import EnergyMeter, NvmlMeter, RaplMeter
from latency_models._metrics import prediction_metrics
from latency_models._persist import (
    PredictorNotFoundError,
    device_predictor,
    fit_predictor,
    load_predictor,
    predictor_path,
    training_data,
)
from latency_models._predictors import (
    PREDICTORS,
    BaseLatencyPredictor,
    FlopsPredictor,
    GraphBoostPredictor,
    HybridPredictor,
    KernelAdditivePredictor,
)
from latency_models._registry import Registry
from latency_models._store import (
    MeasurementStore,
    StoreCorruptedError,
    StoredRecord,
    measure_cached,
)
from latency_models._sweep import kernel_graph, quantize_qdq, random_network, sweep_graphs
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
    "ENERGY_SOURCE",
    "FEATURE_VERSION",
    "PREDICTORS",
    "REFERENCE_GRAPHS",
    "AgentAuthError",
    "AgentBusyError",
    "AgentError",
    "AgentTimeoutError",
    "AgentUnreachableError",
    "BaseLatencyPredictor",
    "CheckResult",
    "DeviceSpec",
    "DuplicateNameError",
    "EnergyMeter",
    "FlopsPredictor",
    "GraphBoostPredictor",
    "GraphFeatures",
    "GraphLike",
    "GraphRejectedError",
    "HybridPredictor",
    "IncompatibleArtifactError",
    "KernelAdditivePredictor",
    "KernelFeatures",
    "LatencyModelsError",
    "Measurement",
    "MeasurementError",
    "MeasurementStore",
    "MemoryFootprint",
    "NvmlMeter",
    "PredictorNotFoundError",
    "RaplMeter",
    "Registry",
    "StoreCorruptedError",
    "StoredRecord",
    "UnknownNameError",
    "add_device",
    "check_device",
    "device_predictor",
    "estimate_energy_mj",
    "fit_predictor",
    "get_device",
    "graph_bytes",
    "graph_features",
    "graph_hash",
    "home_dir",
    "kernel_graph",
    "list_devices",
    "load_graph",
    "load_predictor",
    "measure",
    "measure_cached",
    "memory_footprint",
    "prediction_metrics",
    "predictor_path",
    "quantize_qdq",
    "random_network",
    "remove_device",
    "sweep_graphs",
    "training_data",
]
