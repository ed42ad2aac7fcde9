"""Measure an ONNX graph on a device: here, on a remote agent, or in a Ray task.

:func:`measure` picks the path from the device's ``location``; all three run the same
timing loop (:func:`latency_models.measurement._bench.benchmark`, whose docstring says how a
measurement decides to stop and where its peak memory comes from) and return a
:class:`Measurement`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from latency_models._errors import GraphRejectedError, MeasurementError
from latency_models._graph import GraphLike, graph_bytes, load_graph
from latency_models.devices import DeviceSpec, get_device

_logger = logging.getLogger(__name__)

MEASUREMENT_VERSION = 1


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class Measurement:
    """What running a graph on a device gave.

    Attributes:
        latency_ms: Median time of one run (ms).
        p10_ms: 10th percentile of the per-run times of the timed samples (ms).
        p90_ms: 90th percentile (ms). A sample averages ``runs_per_sample`` runs, so these
            percentiles are of window means.
        cv: Coefficient of variation (std / mean) of the samples.
        n_runs: Timed runs (samples x runs per sample); 0 when unknown (imported).
        energy_mj: Energy per run (mJ), or None when not measured.
        energy_source: ``"rapl"``, ``"nvml"``, ``"not measured"`` (or ``"imported"``).
        peak_memory_bytes: Peak working memory of session creation and runs (bytes).
        memory_source: How the peak was measured (see :mod:`latency_models.measurement._bench`).
        runtime_version: ``"onnxruntime X.Y.Z"`` on the measuring host.
        host: Host fingerprint (``hostname-hash/cpu model/cores``).
        device: The device's name.
        timestamp: When the measurement finished (s since the Unix epoch).
        weight_bytes: Bytes of the graph's initializers.
        rse: Relative standard error of the median when sampling stopped.
        n_samples: Timed samples.
        runs_per_sample: Back-to-back runs per timed sample.
        energy_note: Why energy was not measured, when it was not.
        host_info: CPU model, cores, runtime, hostname hash and the like.
        kernel_times: When asked for (``measure(..., kernel_times_s=...)``), each kernel's
            time from onnxruntime's profiler: dicts with ``name``, ``op``, ``ms`` (the lowest
            median of ``sessions`` profiler sessions), ``output_shape``, ``input_shape``,
            ``sessions`` (see :func:`~latency_models.measurement._bench.profile_kernels`).
    """

    latency_ms: float
    p10_ms: float
    p90_ms: float
    cv: float
    n_runs: int
    energy_mj: float | None
    energy_source: str
    peak_memory_bytes: int | None
    memory_source: str
    runtime_version: str
    host: str
    device: str
    timestamp: float
    weight_bytes: int | None = None
    rse: float = math.nan
    n_samples: int = 0
    runs_per_sample: int = 1
    energy_note: str = ""
    host_info: dict[str, str] = field(default_factory=dict, compare=False)
    kernel_times: list[dict[str, Any]] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN and infinity become None) with ``_type`` and ``version`` keys."""
        data = {k: _nan_to_none(v) for k, v in asdict(self).items()}
        return {"_type": "Measurement", "version": MEASUREMENT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys (listing the valid ones) or missing required keys.
        """
        data = dict(data)
        data.pop("_type", None)
        data.pop("version", None)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown Measurement keys {unknown}; valid keys: {sorted(valid)}.")
        for key in ("rse", "cv", "p10_ms", "p90_ms"):
            if key in data and data[key] is None:
                data[key] = math.nan
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"incomplete Measurement dict: {exc}") from exc

    @classmethod
    def from_benchmark(
        cls, raw: Mapping[str, Any], *, device: str, weight_bytes: int | None
    ) -> Measurement:
        """Build from the dict :func:`latency_models.measurement._bench.benchmark` returns."""
        valid = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in valid}
        kwargs["rse"] = math.inf if kwargs.get("rse") is None else float(kwargs["rse"])
        return cls(**kwargs, device=device, weight_bytes=weight_bytes, timestamp=time.time())


def weight_bytes(graph: GraphLike) -> int:
    """Bytes of the graph's initializers (at their stored element types)."""
    import numpy as np
    import onnx
    from onnx import helper

    model = load_graph(graph)
    total = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            total += (n + 1) // 2
        elif init.data_type == onnx.TensorProto.STRING:
            total += sum(len(s) for s in init.string_data)
        else:
            total += n * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return total


def _options(
    max_seconds: float,
    target_rse: float,
    min_samples: int,
    warmup_s: float,
    window_ms: float,
    pin_cpus: Sequence[int] | None,
    seed: int,
    kernel_times_s: float = 0.0,
) -> dict[str, Any]:
    checks = {
        "max_seconds": max_seconds > 0,
        "target_rse": target_rse > 0,
        "min_samples": isinstance(min_samples, int) and min_samples >= 3,
        "warmup_s": warmup_s >= 0,
        "window_ms": window_ms > 0,
        "kernel_times_s": kernel_times_s >= 0,
    }
    for name, ok in checks.items():
        if not ok:
            value = locals()[name]
            raise ValueError(
                f"measure({name}={value!r}) is invalid: max_seconds, target_rse, window_ms must "
                "be > 0, warmup_s and kernel_times_s >= 0, min_samples an integer >= 3."
            )
    return {
        "max_seconds": float(max_seconds),
        "target_rse": float(target_rse),
        "min_samples": int(min_samples),
        "warmup_s": float(warmup_s),
        "window_ms": float(window_ms),
        "pin_cpus": list(pin_cpus) if pin_cpus else None,
        "seed": int(seed),
        **({"kernel_times_s": float(kernel_times_s)} if kernel_times_s > 0 else {}),
    }


def check_measurement(measurement: Any, device: str) -> None:
    """Refuse a latency that is not a finite number > 0, or a negative or NaN energy.

    Raises:
        MeasurementError: naming the device and the bad value.
    """
    latency = getattr(measurement, "latency_ms", None)
    if (
        not isinstance(latency, (int, float))
        or isinstance(latency, bool)
        or not math.isfinite(latency)
        or latency <= 0
    ):
        raise MeasurementError(
            f"device {device!r} returned a corrupt latency_ms {latency!r}: a latency must be "
            "a finite number > 0 (the run failed or was corrupted)."
        )
    energy = getattr(measurement, "energy_mj", None)
    if energy is not None and (not math.isfinite(energy) or energy < 0):
        raise MeasurementError(
            f"device {device!r} returned a corrupt energy_mj {energy!r}: energy must be a "
            "finite number >= 0, or None when not measured."
        )


def measure(
    graph: GraphLike,
    device: DeviceSpec | str = "local-cpu",
    *,
    max_seconds: float = 3.0,
    target_rse: float = 0.01,
    min_samples: int = 10,
    warmup_s: float = 0.1,
    window_ms: float = 2.0,
    pin_cpus: Sequence[int] | None = None,
    seed: int = 0,
    timeout: float | None = None,
    kernel_times_s: float = 0.0,
) -> Measurement:
    """Measure ``graph`` on ``device`` (here, through its agent, or in a Ray task).

    Args:
        graph: A ModelProto, a path to an ``.onnx`` file, or its bytes.
        device: A device name (see :func:`latency_models.list_devices`) or spec.
        max_seconds: Cap on the timed loop (s); warm-up and session creation come on top.
        target_rse: Stop sampling once the relative standard error of the median latency is
            at most this (0.01 = 1%).
        min_samples: Timed samples needed before ``target_rse`` may stop sampling.
        warmup_s: Minimum warm-up (s).
        window_ms: Minimum duration of one timed sample (ms); sub-millisecond graphs run
            several times back-to-back per sample.
        pin_cpus: CPUs to pin the measurement to (Linux), on the measuring host.
        seed: Seed of the random inputs.
        timeout: Remote devices: how long to wait for a result, queueing included (s);
            default ``max_seconds + 120``.
        kernel_times_s: When > 0, also time each kernel with onnxruntime's profiler for
            about this long (s), into :attr:`Measurement.kernel_times`: the per-kernel
            targets of the ``kernel`` predictor.

    Returns:
        The measurement; ``energy_source == "not measured"`` when the device has no
        readable meter (the reason is in ``energy_note``).

    Raises:
        GraphRejectedError: the graph is not valid ONNX or onnxruntime refuses it.
        AgentUnreachableError, AgentAuthError, AgentTimeoutError, AgentBusyError: the
            device's agent cannot be reached, refuses the token, does not answer in time, or
            stays busy.
        MeasurementError: any other failure of the measurement.
        UnknownNameError: ``device`` is not a registered name.
    """
    spec = get_device(device)
    opts = _options(
        max_seconds, target_rse, min_samples, warmup_s, window_ms, pin_cpus, seed, kernel_times_s
    )
    try:
        data = graph_bytes(graph)
        # parse the path when one is given, so that errors name the file
        wbytes = weight_bytes(graph if isinstance(graph, (str, Path)) else data)
    except ValueError as exc:
        raise GraphRejectedError(str(exc)) from exc
    if timeout is None:
        timeout = max_seconds + 120.0
    if spec.kind == "local":
        raw = measure_raw_local(data, spec, opts)
    elif spec.kind == "http":
        from latency_models.measurement._agent_client import measure_on_agent

        raw = measure_on_agent(data, spec, opts, timeout=timeout)
    else:
        from latency_models.measurement._ray_device import measure_on_ray

        raw = measure_on_ray(data, spec, opts, timeout=timeout)
    return Measurement.from_benchmark(raw, device=spec.name, weight_bytes=wbytes)


LOCK_WAIT_S = 600.0
"""Longest wait for another process measuring the same local device (s)."""
_WARN_AFTER_S = 0.05


@contextlib.contextmanager
def device_lock(spec: DeviceSpec, *, timeout: float = LOCK_WAIT_S) -> Iterator[float]:
    """Hold the device's measurement lock; yields how long it waited for it (s).

    Two processes measuring one local device at once slow each other down (3x was seen), and
    both would store the disturbed times. The lock is an ``fcntl`` lock on
    ``home_dir()/devices/<name>/measure.lock``: released by the kernel if its holder dies. A
    wait is logged as a warning with its length. Where ``fcntl`` is missing, nothing is held.

    Raises:
        MeasurementError: the lock was not free within ``timeout`` seconds.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield 0.0
        return
    from latency_models._home import home_dir

    path = home_dir() / "devices" / spec.name / "measure.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise MeasurementError(
                        f"another process has measured device {spec.name!r} for over "
                        f"{timeout:g} s (lock {path}); wait for it to finish or stop it."
                    ) from None
                time.sleep(0.05)
        waited = time.monotonic() - start
        if waited > _WARN_AFTER_S:
            _logger.warning(
                "waited %.1f s for another process measuring device %r (lock %s): two "
                "measurements at once on one device disturb each other",
                waited, spec.name, path,
            )  # fmt: skip
        try:
            yield waited
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def measure_raw_local(data: bytes, spec: DeviceSpec, opts: Mapping[str, Any]) -> dict[str, Any]:
    """Run :func:`~latency_models.measurement._bench.benchmark` here with ``spec``'s settings.

    One process at a time measures a device (:func:`device_lock`).
    """
    from latency_models.measurement._bench import GraphRejected, benchmark

    try:
        with device_lock(spec):
            return benchmark(
                data,
                threads=spec.threads,
                batch_size=spec.batch_size,
                providers=spec.providers,
                runtime=spec.runtime,
                energy_meter=spec.energy_meter,
                **opts,
            )
    except GraphRejected as exc:
        raise GraphRejectedError(f"{exc} (device {spec.name!r})") from exc
    except ValueError as exc:
        raise MeasurementError(f"cannot measure on device {spec.name!r}: {exc}") from exc


def dumps(measurement: Measurement) -> str:
    """Compact, sorted JSON of a measurement."""
    return json.dumps(measurement.to_dict(), sort_keys=True, separators=(",", ":"))
