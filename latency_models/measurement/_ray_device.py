"""Measure on a Ray node that holds a custom resource (device location ``"ray:RESOURCE"``).

The task asks for one unit of the resource and no CPU, so it runs on the node that holds
the resource and two measurements never overlap (give each benchmark node exactly one unit:
``ray start --resources='{"bench": 1}'``). Asking for no CPU keeps a busy cluster whose CPUs
are all taken by training trials from starving the measurement (an idle-CPU wait was seen
with Ray 2.x); keep other work off the benchmark node if you want clean numbers.

The result's ``host_info["ray_node_id"]`` names the node that measured. A cluster without the
resource, or a node lost during the measurement, raises :class:`AgentUnreachableError`, as
an agent that does not answer does: a search goes on with predictions and measures again
once the node is back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latency_models._errors import (
    AgentTimeoutError,
    AgentUnreachableError,
    GraphRejectedError,
    MeasurementError,
)
from latency_models.devices import DeviceSpec


def _remote_benchmark(data: bytes, kwargs: dict[str, Any]) -> dict[str, Any]:
    import ray

    from latency_models.measurement._bench import benchmark

    result = benchmark(data, **kwargs)
    info = dict(result.get("host_info") or {})
    info["ray_node_id"] = ray.get_runtime_context().get_node_id()
    result["host_info"] = info
    return result


def measure_on_ray(
    data: bytes, device: DeviceSpec, opts: Mapping[str, Any], *, timeout: float
) -> dict[str, Any]:
    """Run the benchmark in a Ray task holding ``{RESOURCE: 1}``.

    Uses the Ray session this process already started (``ray.init``); otherwise connects to
    a running cluster (``$RAY_ADDRESS`` or ``"auto"``).

    Raises:
        MeasurementError: no cluster.
        AgentUnreachableError: no node holds the resource, or the node was lost while
            measuring.
        AgentTimeoutError: no result within ``timeout`` seconds.
        GraphRejectedError: onnxruntime on the node rejected the graph.
    """
    import os

    import ray

    resource = device.location.split(":", 1)[1]
    if not ray.is_initialized():
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
        except Exception as exc:  # ConnectionError and Ray's own
            raise MeasurementError(
                f"device {device.name!r} runs on Ray resource {resource!r}, but no Ray cluster is "
                f'running: {exc}. Start one with `ray start --head --resources=\'{{"{resource}": '
                "1}'` or call ray.init(resources=...) first."
            ) from exc
    available = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if available.get(resource, 0) < 1:
        raise AgentUnreachableError(
            f"no Ray node holds resource {resource!r} (device {device.name!r}); cluster "
            f"resources: {sorted(available)}. Start the benchmark node with "
            f"`ray start --resources='{{\"{resource}\": 1}}'`."
        )
    kwargs = {
        "threads": device.threads,
        "batch_size": device.batch_size,
        "providers": list(device.providers),
        "runtime": device.runtime,
        "energy_meter": device.energy_meter,
        **opts,
    }
    task = ray.remote(num_cpus=0, resources={resource: 1}, max_retries=0)(_remote_benchmark)
    ref = task.remote(data, kwargs)
    try:
        result: dict[str, Any] = ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError as exc:
        ray.cancel(ref, force=True)
        raise AgentTimeoutError(
            f"the Ray measurement on {resource!r} gave no result within {timeout:g} s."
        ) from exc
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if type(cause).__name__ == "GraphRejected":
            raise GraphRejectedError(f"{cause} (device {device.name!r})") from exc
        raise MeasurementError(f"the Ray measurement on {resource!r} failed: {exc}") from exc
    except (
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.ObjectLostError,
    ) as exc:
        raise AgentUnreachableError(
            f"the Ray node holding {resource!r} was lost during the measurement "
            f"({type(exc).__name__}); device {device.name!r} is measured again once a node "
            "with the resource rejoins."
        ) from exc
    return result
