"""Measure a graph unless the device's store already holds it for this runtime and host."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latency_models._graph import GraphLike, graph_bytes
from latency_models.devices import DeviceSpec, get_device
from latency_models.measurement._measure import Measurement, check_measurement, measure
from latency_models.measurement._store import MeasurementStore, too_big_to_keep


def measure_interleaved(
    graphs: Mapping[str, GraphLike],
    device: DeviceSpec,
    *,
    rounds: int,
    keep: bool = False,
    **measure_options: Any,
) -> dict[str, list[Measurement]]:
    """Each graph measured ``rounds`` times, one of each per round, every value checked.

    Graphs compared on a shared machine are measured round by round so that its drift hits
    them alike and their medians compare. ``keep``: each measurement also goes into the
    device's store (:func:`measure_cached` with ``remeasure``).

    Raises:
        MeasurementError: the device did not answer, or returned a corrupt value.
    """
    runs: dict[str, list[Measurement]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, graph in graphs.items():
            if keep:
                m = measure_cached(graph, device, remeasure=True, **measure_options)
            else:
                m = measure(graph, device, **measure_options)
            check_measurement(m, device.name)
            runs[name].append(m)
    return runs


def measure_cached(
    graph: GraphLike,
    device: DeviceSpec | str = "local-cpu",
    *,
    store: MeasurementStore | None = None,
    remeasure: bool = False,
    features: Mapping[str, Any] | None = None,
    **measure_options: Any,
) -> Measurement:
    """Measure ``graph`` on ``device`` unless the store already holds it for this runtime and host.

    With ``kernel_times_s > 0`` among the options, a stored record counts only if it has
    per-kernel times.

    The target's runtime version and host come from this machine (local devices), the
    agent's ``/health`` (HTTP devices) or are not known beforehand (Ray devices: the newest
    record of the graph from any host counts).

    Args:
        graph: The graph.
        device: Device name or spec.
        store: Where to look and keep; default the device's store.
        remeasure: Measure even when a record exists (both are kept).
        features: Features to store with the graph.
        **measure_options: Passed to :func:`latency_models.measure`.
    """
    spec = get_device(device)
    store = store if store is not None else MeasurementStore(spec.name)
    data = graph_bytes(graph)
    digest = hashlib.sha256(data).hexdigest()
    if not remeasure:
        runtime, host = _target_identity(spec)
        found = store.get(digest, runtime_version=runtime, host=host)
        if found is not None and measure_options.get("kernel_times_s", 0) > 0:
            found = next(
                (
                    r
                    for r in reversed(store.history(digest))
                    if r.measurement.kernel_times
                    and (runtime is None or r.measurement.runtime_version == runtime)
                    and (host is None or r.measurement.host == host)
                ),
                None,
            )
        if found is not None:
            if features is not None:
                store.set_features(digest, features)
            return found.measurement
    by_path = too_big_to_keep(graph, len(data))  # refused here, before measuring
    result = measure(graph if isinstance(graph, (str, Path)) else data, spec, **measure_options)
    store.put(
        graph if by_path else data, result, features=features, graph_hash=digest,
        keep_path=by_path,
    )  # fmt: skip
    return result


def _target_identity(spec: DeviceSpec) -> tuple[str | None, str | None]:
    if spec.kind == "local":
        from latency_models.measurement._bench import host_fingerprint, runtime_version

        if spec.runtime == "onnxruntime":
            return runtime_version(), host_fingerprint()
        from latency_models.runtimes import get_runtime

        return get_runtime(spec.runtime).version(), host_fingerprint()
    if spec.kind == "http":
        from latency_models.measurement._agent_client import agent_health

        health = agent_health(spec)
        return health["runtime_version"], health["host"]
    return None, None
