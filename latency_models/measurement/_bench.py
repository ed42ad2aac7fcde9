"""The timing loop: run one ONNX graph in onnxruntime and report what happened.

Standard library, numpy and onnxruntime only: the measurement agent runs this module on
devices that have nothing else (it can be copied there with ``_host.py``, ``_meters.py`` and
``agent.py``). The result is a plain JSON-able dict; :func:`latency_models.measure` turns
it into a :class:`~latency_models.Measurement`.

How a measurement stops
-----------------------
After warm-up (at least ``warmup_s`` and two runs), the per-run time ``t`` is estimated and
each *sample* times ``k = ceil(window_ms / t)`` back-to-back runs, so a sub-millisecond
graph is not measured against timer and scheduler noise one run at a time. Sampling stops
when at least ``min_samples`` samples exist and the relative standard error of their median
is at most ``target_rse``, or when ``max_seconds`` of timed work have passed (with at least
three samples). The standard error of the median is distribution-free: half the width of
the order-statistic 95% confidence interval of the median (ranks ``n/2 ± 0.98·sqrt(n)``),
divided by 1.96. The garbage collector is off during the timed loop.

Peak memory
-----------
On Linux the process's peak resident set (``VmHWM``) is reset through
``/proc/self/clear_refs`` before the session is created, and the reported peak is
``VmHWM - VmRSS`` (before), i.e. the largest growth of resident memory while the session
was created, its weights loaded, its arena filled and the graph run. It counts what the
runtime really touched (onnxruntime's CPU arena does not expose statistics in Python). It
is a lower bound when the allocator reuses memory freed earlier in the same process, and
it counts other threads of the process (the agent serializes measurements). Where the peak
cannot be reset, the growth of ``ru_maxrss`` is reported and labelled a lower bound.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
import platform
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from latency_models.devices._meters import EnergyMeter, open_meter
    from latency_models.measurement._host import host_nchwc_block
else:  # a copied stand-alone agent: _meters.py and _host.py sit next to this file
    from _host import host_nchwc_block  # type: ignore[no-redef,import-not-found]
    from _meters import EnergyMeter, open_meter  # type: ignore[no-redef,import-not-found]

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(bool)": np.bool_,
}

MEMORY_SOURCE_HWM = "process peak RSS growth (Linux VmHWM, reset) over session creation and runs"
MEMORY_SOURCE_MAXRSS = "process ru_maxrss growth over session creation and runs (lower bound)"
NOT_MEASURED = "not measured"

# A one-node Identity model: creating a session of it once initializes onnxruntime's
# process-wide environment, so that cost does not count towards the first graph's memory.
_WARM_MODEL = (
    b'\x08\x08:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01wZ\x0f\n\x01x\x12\n\n\x08\x08'
    b"\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x11"
)
_warmed = False


def _warm_runtime() -> None:
    global _warmed
    if not _warmed:
        import onnxruntime as ort

        ort.InferenceSession(_WARM_MODEL, providers=["CPUExecutionProvider"])
        _warmed = True


class GraphRejected(ValueError):
    """onnxruntime refused to load or run the graph (the message says which and why)."""


def runtime_version() -> str:
    """``onnxruntime <version>``."""
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def host_info() -> dict[str, str]:
    """What identifies this host for a measurement: CPU model, cores, runtime, hostname hash.

    Also the channel block of onnxruntime's NCHWc layout here (``nchwc_block``), which
    decides the kernels a graph runs as on this host (:mod:`latency_models.measurement._host`).
    """
    return {
        "cpu_model": _cpu_model(),
        "cores": str(os.cpu_count() or 0),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "runtime": runtime_version(),
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
        "nchwc_block": str(host_nchwc_block()),
    }


def host_fingerprint(info: Mapping[str, str] | None = None) -> str:
    """A short readable host key: ``<hostname hash>/<cpu model>/<cores>c``."""
    info = host_info() if info is None else info
    return f"{info['hostname_hash']}/{info['cpu_model']}/{info['cores']}c"


def make_inputs(
    session: Any, batch_size: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Random inputs of the session's declared shapes and types.

    The first dimension, when dynamic, is ``batch_size``; other dynamic dimensions are 1.

    Returns:
        The feeds, and notes naming every dynamic dimension that was set to 1.

    Raises:
        GraphRejected: an input is not a tensor of a supported element type.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for inp in session.get_inputs():
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise GraphRejected(
                f"input {inp.name!r} has type {inp.type}; supported: {sorted(_DTYPES)}."
            )
        shape = []
        for axis, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(batch_size)
            else:
                shape.append(1)
                notes.append(f"input {inp.name!r} axis {axis} ({dim!r}) set to 1")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds, notes


def median_rse(samples: Sequence[float]) -> float:
    """Relative standard error of the median of ``samples`` (distribution-free).

    Half the width of the order-statistic 95% confidence interval of the median, divided by
    1.96 and by the median. Infinite for fewer than three samples.
    """
    n = len(samples)
    if n < 3:
        return math.inf
    x = np.sort(np.asarray(samples, dtype=np.float64))
    half = 0.98 * math.sqrt(n)
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half))
    med = float(np.median(x))
    if med <= 0:
        return math.inf
    return float((x[hi] - x[lo]) / (2 * 1.96) / med)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class _PeakMemory:
    """Peak resident-memory growth between :meth:`start` and :meth:`stop` (bytes)."""

    def start(self) -> None:
        self.source = NOT_MEASURED
        self.base_kb: int | None = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base_kb = _status_kb("VmRSS")
            if self.base_kb is not None:
                self.source = MEMORY_SOURCE_HWM
                return
        except OSError:
            pass
        try:
            import resource

            self.base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.source = MEMORY_SOURCE_MAXRSS
        except (ImportError, OSError):
            self.base_kb = None

    def stop(self) -> int | None:
        if self.base_kb is None:
            return None
        if self.source == MEMORY_SOURCE_HWM:
            peak = _status_kb("VmHWM")
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if peak is None:
            return None
        return max(0, peak - self.base_kb) * 1024


@contextlib.contextmanager
def _pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    if not cpus:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pin_cpus needs os.sched_setaffinity (Linux); pass pin_cpus=None.")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as exc:
        raise ValueError(
            f"cannot pin to CPUs {list(cpus)}: {exc}; allowed: {sorted(before)}."
        ) from exc
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _session_options(threads: int) -> Any:
    """The session options of every measurement (the profiled session's too)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def _session(model: bytes, providers: Sequence[str], threads: int) -> Any:
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(
            f"execution providers {missing} are not available in this onnxruntime; "
            f"available: {available}. Install the matching onnxruntime build or change the "
            "device's providers."
        )
    try:
        session = ort.InferenceSession(
            model, sess_options=_session_options(threads), providers=list(providers)
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise GraphRejected(f"onnxruntime rejected the graph: {exc}") from exc
    # A provider that fails to initialise (a CUDA provider without its libraries, say) is
    # dropped with only a log line, and the session runs on the next one: a measurement
    # labelled with the device would then be of another processor.
    if providers and providers[0] not in session.get_providers():
        raise ValueError(
            f"onnxruntime could not start {providers[0]} (the session got "
            f"{session.get_providers()}); check its libraries (for CUDA: the CUDA and cuDNN "
            f"versions this onnxruntime build needs), or measure on another device."
        )
    return session


def benchmark(
    model: bytes,
    *,
    threads: int = 1,
    batch_size: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    max_seconds: float = 3.0,
    target_rse: float = 0.01,
    min_samples: int = 10,
    warmup_s: float = 0.1,
    window_ms: float = 2.0,
    energy_meter: str = "none",
    pin_cpus: Sequence[int] | None = None,
    seed: int = 0,
    kernel_times_s: float = 0.0,
    runtime: str = "onnxruntime",
) -> dict[str, Any]:
    """Time ``model`` in a fresh onnxruntime session (see the module docstring for how).

    Args:
        model: The serialized ONNX model.
        threads: onnxruntime intra-op threads (inter-op is 1, execution sequential).
        batch_size: Size of dynamic first dimensions of the inputs.
        providers: onnxruntime execution providers, in priority order.
        max_seconds: Cap on the timed loop (s); warm-up and session creation come on top.
        target_rse: Stop once the relative standard error of the median is at most this.
        min_samples: Timed samples needed before the error target may stop the loop.
        warmup_s: Minimum warm-up time (s), at least two runs (one if a run is very long).
        window_ms: Minimum duration of one timed sample (ms), made of back-to-back runs.
        energy_meter: ``"none"``, ``"rapl"`` or ``"nvml"``; an unreadable meter gives
            ``energy_source == "not measured"`` and the reason in ``energy_note``.
        pin_cpus: CPUs to pin the measuring thread and its session's threads to.
        seed: Seed of the random inputs.
        kernel_times_s: When > 0, also time each kernel with onnxruntime's profiler for
            about this long, in sessions of its own (:func:`profile_kernels`; onnxruntime
            only).
        runtime: The device runtime (:mod:`latency_models.runtimes`); other than
            ``"onnxruntime"``, the graph is converted and loaded by that runtime's backend
            and timed by the same loop (``providers`` is then ignored).

    Returns:
        A JSON-able dict: ``latency_ms`` (median per run), ``p10_ms``, ``p90_ms``, ``cv``,
        ``rse``, ``n_runs``, ``n_samples``, ``runs_per_sample``, ``timed_s``, ``energy_mj``
        (per run, or None), ``energy_source``, ``energy_note``, ``peak_memory_bytes``,
        ``memory_source``, ``runtime_version``, ``host``, ``host_info``, ``threads``,
        ``batch_size``, ``providers``, ``notes``, ``kernel_times`` (None unless asked for).

    Raises:
        GraphRejected: onnxruntime cannot load or run the graph.
        ValueError: a setting is invalid (providers, pinning).
    """
    _check_settings(threads, batch_size, max_seconds, window_ms, warmup_s, kernel_times_s)
    meter, meter_note = open_meter(energy_meter)
    memory = _PeakMemory()
    _warm_runtime()
    with _pinned(pin_cpus), contextlib.ExitStack() as cleanup:
        memory.start()
        run, feeds, notes, prepared = _load(
            runtime, model, providers, threads, batch_size, seed, cleanup
        )
        if prepared is not None:
            kernel_times_s = 0.0  # the runtime's profiler is not read
        _first_run(run, feeds, notes, runtime)
        per_run_ms = _warm_up(run, feeds, warmup_s, max_seconds)
        k = max(1, math.ceil(window_ms / max(per_run_ms, 1e-6)))
        samples, rse = _timed_loop(run, feeds, k, max_seconds, target_rse, min_samples, meter)
        peak = memory.stop()
        kernels = None
        if kernel_times_s > 0:
            kernels = profile_kernels(model, providers, threads, feeds, per_run_ms, kernel_times_s)
    times, timed_s, energy_j = samples
    return {
        **_timing_stats(times, k, rse, timed_s),
        **_energy_fields(energy_j, len(times) * k, meter, meter_note),
        "peak_memory_bytes": peak,
        "memory_source": memory.source,
        **_setup_fields(runtime, prepared, notes, threads, batch_size, providers),
        "kernel_times": kernels,
    }


def _load(
    runtime: str,
    model: bytes,
    providers: Sequence[str],
    threads: int,
    batch_size: int,
    seed: int,
    cleanup: contextlib.ExitStack,
) -> tuple[Any, dict[str, np.ndarray], list[str], Any]:
    """The graph loaded in ``runtime``: ``(run, feeds, notes, prepared)``.

    ``run(None, feeds)`` runs it once; ``prepared`` is the backend's loaded graph for a
    runtime other than onnxruntime (closed with ``cleanup``), else None.
    """
    if runtime == "onnxruntime":
        session = _session(model, providers, threads)
        feeds, notes = make_inputs(session, batch_size, seed)
        return session.run, feeds, notes, None
    prepared = cleanup.enter_context(_prepare(runtime, model, threads, batch_size, seed))
    return _no_args(prepared.run), prepared.inputs, list(prepared.notes), prepared


def _check_settings(
    threads: int,
    batch_size: int,
    max_seconds: float,
    window_ms: float,
    warmup_s: float,
    kernel_times_s: float,
) -> None:
    """Refuse settings :func:`benchmark` cannot time with, naming them all."""
    finite = all(map(math.isfinite, (max_seconds, window_ms, warmup_s, kernel_times_s)))
    if not (finite and threads >= 1 and batch_size >= 1 and max_seconds > 0 and window_ms > 0):
        raise ValueError(
            f"threads and batch_size must be >= 1, max_seconds and window_ms finite and > 0, "
            f"warmup_s and kernel_times_s finite; got threads={threads}, "
            f"batch_size={batch_size}, max_seconds={max_seconds}, window_ms={window_ms}, "
            f"warmup_s={warmup_s}, kernel_times_s={kernel_times_s}."
        )


def _first_run(run: Any, feeds: dict[str, np.ndarray], notes: list[str], runtime: str) -> None:
    """Run the graph once; a failure means the runtime rejects it (:class:`GraphRejected`)."""
    try:
        run(None, feeds)
    except Exception as exc:
        hint = f" ({'; '.join(notes)}: export with static shapes)" if notes else ""
        raise GraphRejected(f"{runtime} failed to run the graph{hint}: {exc}") from exc


def _warm_up(run: Any, feeds: dict[str, np.ndarray], warmup_s: float, max_seconds: float) -> float:
    """Run for at least ``warmup_s`` and two runs; returns the median time of one run (ms).

    One run of a quarter of ``max_seconds`` or more is enough on its own.
    """
    warm: list[float] = []
    t_end = time.perf_counter() + min(warmup_s, max_seconds)
    while True:
        t0 = time.perf_counter_ns()
        run(None, feeds)
        warm.append((time.perf_counter_ns() - t0) / 1e6)
        if len(warm) >= 2 and time.perf_counter() >= t_end:
            break
        if warm[-1] > max_seconds * 250:  # one run is a quarter of the cap: enough
            break
    return float(np.median(warm))


def _timing_stats(times: list[float], k: int, rse: float, timed_s: float) -> dict[str, Any]:
    """The latency part of :func:`benchmark`'s result, from per-run times (ms) of samples."""
    arr = np.asarray(times)
    return {
        "latency_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "cv": float(arr.std() / arr.mean()) if arr.mean() > 0 else 0.0,
        "rse": rse,
        "n_runs": len(times) * k,
        "n_samples": len(times),
        "runs_per_sample": k,
        "timed_s": timed_s,
    }


def _energy_fields(
    energy_j: float | None, n_runs: int, meter: EnergyMeter | None, meter_note: str
) -> dict[str, Any]:
    """The energy part of :func:`benchmark`'s result: per run (mJ), its source and a note."""
    energy_mj = None if energy_j is None else energy_j / n_runs * 1e3
    return {
        "energy_mj": energy_mj,
        "energy_source": meter.name if energy_mj is not None and meter else NOT_MEASURED,
        "energy_note": meter_note,
    }


def _setup_fields(
    runtime: str,
    prepared: Any,
    notes: list[str],
    threads: int,
    batch_size: int,
    providers: Sequence[str],
) -> dict[str, Any]:
    """What :func:`benchmark`'s result says about where and how the graph ran."""
    version = runtime_version() if prepared is None else _runtime_of(runtime).version()
    if prepared is not None:
        notes.append(f"{runtime} ran {prepared.precision} kernels")
    info = host_info()
    return {
        "runtime_version": version,
        "runtime": runtime,
        "host": host_fingerprint(info),
        "host_info": info,
        "threads": threads,
        "batch_size": batch_size,
        "providers": list(providers),
        "notes": notes,
    }


def _runtime_of(name: str) -> Any:
    if __package__:
        from latency_models.runtimes import get_runtime
    else:  # a copied stand-alone agent: the runtimes folder sits next to this file
        from runtimes import get_runtime  # type: ignore[no-redef,import-not-found]
    return get_runtime(name)


def _prepare(runtime: str, model: bytes, threads: int, batch_size: int, seed: int) -> Any:
    """Load ``model`` in ``runtime``'s backend; its refusals become GraphRejected."""
    backend = _runtime_of(runtime)
    try:
        return backend.prepare(model, threads=threads, batch_size=batch_size, seed=seed)
    except ImportError as exc:  # RuntimeNotInstalledError: the message names the extra
        raise ValueError(str(exc)) from exc
    except ValueError as exc:
        if type(exc).__name__ == "ConversionError":
            raise GraphRejected(str(exc)) from exc
        raise


def _no_args(run: Any) -> Any:
    """``run()`` in the shape of onnxruntime's ``session.run(None, feeds)``."""
    return lambda _outputs, _feeds: run()


KERNEL_TIME_RUNS = (20, 400)
"""Fewest and most profiled runs of :func:`profile_kernels`, over all its sessions."""

PROFILE_SESSIONS = 3
"""Profiler sessions :func:`profile_kernels` splits its runs into; each kernel's time is the
lowest of their medians, as a latency label is the best of several sessions."""


def profile_kernels(
    model: bytes,
    providers: Sequence[str],
    threads: int,
    feeds: dict[str, np.ndarray],
    per_run_ms: float,
    budget_s: float,
    sessions: int = PROFILE_SESSIONS,
) -> list[dict[str, Any]]:
    """Time of each kernel onnxruntime runs, from its profiler, in sessions of their own.

    The profiler records every node of every run (microsecond resolution) and adds a few
    microseconds of its own per node, so these are measured *in context* (the caches hold
    what the graph's other kernels left) but are not the latency: the sum of the kernels is
    a little above the unprofiled run time on small graphs. Predictors use them as
    per-kernel targets and calibrate the sum against the measured latency.

    A kernel's median differs between sessions of the same graph by more than between runs
    of one session (a small conv measured 0.030 ms in one session and 0.047 ms in the next:
    where the arena puts its tensors, what else ran meanwhile). Other processes only add
    time, so the runs are split into ``sessions`` fresh sessions and each kernel keeps the
    lowest of its session medians.

    Args:
        model: The serialized ONNX model.
        providers: Execution providers, as for the timed session.
        threads: Intra-op threads.
        feeds: Inputs to run with.
        per_run_ms: Time of one unprofiled run (ms), to size the number of runs.
        budget_s: Time to spend profiling (s); between 20 and 400 runs are made in all,
            rounded up to a whole number per session.
        sessions: Fresh profiler sessions to split the runs into (at least 1).

    Returns:
        One dict per kernel in execution order: ``name`` (onnxruntime's node name),
        ``op`` (the kernel's op type after fusion), ``ms`` (the lowest over the sessions of
        the median over a session's runs), ``output_shape`` and ``input_shape`` (first
        output and input, as onnxruntime reports them; channels-last for int8 kernels),
        ``sessions`` (how many sessions the lowest was taken over).
    """
    if sessions < 1:
        raise ValueError(f"sessions must be >= 1, got {sessions}.")
    lo, hi = KERNEL_TIME_RUNS
    runs = int(min(hi, max(lo, budget_s * 1e3 / max(per_run_ms, 1e-3))))
    per_session = max(1, math.ceil(runs / sessions))
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(sessions):
        for key, entry in _profile_session(model, providers, threads, feeds, per_session):
            if key not in best or entry["ms"] < best[key]["ms"]:
                best[key] = entry
    return [{**entry, "sessions": sessions} for entry in best.values()]


def _profile_session(
    model: bytes,
    providers: Sequence[str],
    threads: int,
    feeds: dict[str, np.ndarray],
    runs: int,
) -> list[tuple[tuple[str, int], dict[str, Any]]]:
    """Each kernel's median time over ``runs`` profiled runs of one fresh session.

    Returns:
        ((onnxruntime's node name, node index), entry) per kernel, in execution order.
    """
    import json
    import tempfile

    import onnxruntime as ort

    warm = 2
    with tempfile.TemporaryDirectory(prefix="hwnas-prof-") as tmp:
        opts = _session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model, sess_options=opts, providers=list(providers))
        for _ in range(warm + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple[str, int], list[float]] = {}
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        key = (name[: -len("_kernel_time")], int(args.get("node_index", -1)))
        per_node.setdefault(key, []).append(float(e["dur"]) / 1e3)
        first.setdefault(key, args)
    out = []
    for key, durs in per_node.items():
        args = first[key]
        entry = {
            "name": key[0],
            "op": str(args.get("op_name", "")),
            "ms": float(np.median(durs[warm:] if len(durs) > warm else durs)),
            "output_shape": _first_shape(args.get("output_type_shape")),
            "input_shape": _first_shape(args.get("input_type_shape")),
        }
        out.append((key, entry))
    return out


def _first_shape(shapes: Any) -> list[int]:
    """``[{"float": [1, 3, 8, 8]}, ...]`` (onnxruntime's profile format) -> ``[1, 3, 8, 8]``."""
    if not shapes or not isinstance(shapes[0], dict) or not shapes[0]:
        return []
    return [int(d) for d in next(iter(shapes[0].values()))]


def _timed_loop(
    run: Any,
    feeds: dict[str, np.ndarray],
    k: int,
    max_seconds: float,
    target_rse: float,
    min_samples: int,
    meter: EnergyMeter | None,
) -> tuple[tuple[list[float], float, float | None], float]:
    """Timed samples of ``k`` runs each; returns ((per-run ms, timed s, energy J), rse).

    Runs for at least the meter's shortest readable window, when there is a meter.
    """
    min_timed_s = meter.min_window_s if meter is not None else 0.0
    times: list[float] = []
    rse = math.inf
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        e0 = meter.read() if meter is not None else None
        start = time.perf_counter()
        deadline = start + max_seconds
        while True:
            t0 = time.perf_counter_ns()
            for _ in range(k):
                run(None, feeds)
            times.append((time.perf_counter_ns() - t0) / 1e6 / k)
            now = time.perf_counter()
            n = len(times)
            if now - start < min_timed_s:
                continue
            if n >= min_samples and (n < 50 or n % 5 == 0):
                rse = median_rse(times)
                if rse <= target_rse:
                    break
            if now >= deadline and n >= 3:
                rse = median_rse(times)
                break
        timed_s = time.perf_counter() - start
        energy = meter.joules_between(e0, meter.read()) if meter is not None and e0 else None
    finally:
        if gc_was_enabled:
            gc.enable()
    return (times, timed_s, energy), rse
