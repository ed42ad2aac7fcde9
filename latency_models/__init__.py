"""What a device makes of an ONNX graph: devices, measurement, features, predictors.

This package never imports torch: it must run on a device that has only onnxruntime
and numpy (the measurement agent runs there).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latency_models._errors import (
    DuplicateNameError,
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
    StaleFeaturesError,
    UnknownNameError,
)
from latency_models._graph import GraphLike, graph_bytes, graph_hash, load_graph
from latency_models._home import home_dir
from latency_models._registry import Registry

if TYPE_CHECKING:
    from latency_models._errors import (
        AgentAuthError,
        AgentBusyError,
        AgentError,
        AgentTimeoutError,
        AgentUnreachableError,
        GraphRejectedError,
        ProfileError,
    )
    from latency_models.devices import (
        DEVICES,
        DeviceSpec,
        add_device,
        get_device,
        list_devices,
        remove_device,
    )
    from latency_models.devices._meters import EnergyMeter, NvmlMeter, RaplMeter
    from latency_models.features._features import (
        FEATURE_VERSION,
        GraphFeatures,
        KernelFeatures,
        graph_features,
    )
    from latency_models.features._kernel_times import align_kernel_times
    from latency_models.features._memory import MemoryFootprint, memory_footprint
    from latency_models.measurement._cached import measure_cached
    from latency_models.measurement._measure import Measurement, measure
    from latency_models.measurement._records import StoredRecord
    from latency_models.measurement._store import MeasurementStore, StoreCorruptedError
    from latency_models.predictors._additive import FlopsPredictor, KernelAdditivePredictor
    from latency_models.predictors._base import PREDICTORS, BaseLatencyPredictor, load_predictor
    from latency_models.predictors._combined_predictor import CombinedPredictor
    from latency_models.predictors._energy_model import ENERGY_SOURCE, estimate_energy_mj
    from latency_models.predictors._kernel_predictor import KernelPredictor
    from latency_models.predictors._metrics import prediction_metrics
    from latency_models.predictors._persist import (
        PredictorNotFoundError,
        device_predictor,
        fit_predictor,
        predictor_path,
        training_data,
        training_kernel_times,
    )
    from latency_models.predictors._trees import GraphBoostPredictor, HybridPredictor
    from latency_models.profiling._builder import quantize_qdq
    from latency_models.profiling._check import REFERENCE_GRAPHS, CheckResult, check_device
    from latency_models.profiling._networks import kernel_graph, random_network, staged_network
    from latency_models.profiling._profile import ProfileResult, evaluate_device, profile_device
    from latency_models.profiling._sweep import sweep_graphs

# Heavier modules (scikit-learn, onnxruntime) load on first use, so that `import nas` and
# `hwnas --help` stay fast: public name -> private module (PEP 562).
_LAZY: dict[str, str] = {
    "AgentAuthError": "latency_models._errors",
    "AgentBusyError": "latency_models._errors",
    "AgentError": "latency_models._errors",
    "AgentTimeoutError": "latency_models._errors",
    "AgentUnreachableError": "latency_models._errors",
    "BaseLatencyPredictor": "latency_models.predictors._base",
    "CheckResult": "latency_models.profiling._check",
    "DEVICES": "latency_models.devices",
    "DeviceSpec": "latency_models.devices",
    "ENERGY_SOURCE": "latency_models.predictors._energy_model",
    "EnergyMeter": "latency_models.devices._meters",
    "FEATURE_VERSION": "latency_models.features._features",
    "FlopsPredictor": "latency_models.predictors._additive",
    "GraphBoostPredictor": "latency_models.predictors._trees",
    "GraphFeatures": "latency_models.features._features",
    "GraphRejectedError": "latency_models._errors",
    "HybridPredictor": "latency_models.predictors._trees",
    "KernelAdditivePredictor": "latency_models.predictors._additive",
    "KernelFeatures": "latency_models.features._features",
    "Measurement": "latency_models.measurement._measure",
    "MeasurementStore": "latency_models.measurement._store",
    "MemoryFootprint": "latency_models.features._memory",
    "NvmlMeter": "latency_models.devices._meters",
    "PREDICTORS": "latency_models.predictors._base",
    "PredictorNotFoundError": "latency_models.predictors._persist",
    "REFERENCE_GRAPHS": "latency_models.profiling._check",
    "RaplMeter": "latency_models.devices._meters",
    "StoreCorruptedError": "latency_models.measurement._store",
    "StoredRecord": "latency_models.measurement._records",
    "add_device": "latency_models.devices",
    "check_device": "latency_models.profiling._check",
    "device_predictor": "latency_models.predictors._persist",
    "estimate_energy_mj": "latency_models.predictors._energy_model",
    "fit_predictor": "latency_models.predictors._persist",
    "get_device": "latency_models.devices",
    "graph_features": "latency_models.features._features",
    "kernel_graph": "latency_models.profiling._networks",
    "list_devices": "latency_models.devices",
    "load_predictor": "latency_models.predictors._base",
    "measure": "latency_models.measurement._measure",
    "measure_cached": "latency_models.measurement._cached",
    "memory_footprint": "latency_models.features._memory",
    "prediction_metrics": "latency_models.predictors._metrics",
    "predictor_path": "latency_models.predictors._persist",
    "quantize_qdq": "latency_models.profiling._builder",
    "random_network": "latency_models.profiling._networks",
    "remove_device": "latency_models.devices",
    "staged_network": "latency_models.profiling._networks",
    "sweep_graphs": "latency_models.profiling._sweep",
    "training_data": "latency_models.predictors._persist",
    "training_kernel_times": "latency_models.predictors._persist",
    "KernelPredictor": "latency_models.predictors._kernel_predictor",
    "CombinedPredictor": "latency_models.predictors._combined_predictor",
    "align_kernel_times": "latency_models.features._kernel_times",
    "ProfileError": "latency_models._errors",
    "ProfileResult": "latency_models.profiling._profile",
    "profile_device": "latency_models.profiling._profile",
    "evaluate_device": "latency_models.profiling._profile",
}

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
    "CombinedPredictor",
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
    "KernelPredictor",
    "LatencyModelsError",
    "Measurement",
    "MeasurementError",
    "MeasurementStore",
    "MemoryFootprint",
    "NvmlMeter",
    "PredictorNotFoundError",
    "ProfileError",
    "ProfileResult",
    "RaplMeter",
    "Registry",
    "StaleFeaturesError",
    "StoreCorruptedError",
    "StoredRecord",
    "UnknownNameError",
    "add_device",
    "align_kernel_times",
    "check_device",
    "device_predictor",
    "estimate_energy_mj",
    "evaluate_device",
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
    "profile_device",
    "quantize_qdq",
    "random_network",
    "remove_device",
    "staged_network",
    "sweep_graphs",
    "training_data",
    "training_kernel_times",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latency_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
