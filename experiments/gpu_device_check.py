"""One-shot check of a lent NVIDIA GPU: hwnas's NVML energy meter, and ONNX graphs on the GPU.

Records, into one JSON file (rewritten after every section, so a killed run keeps what it
had), and prints a short summary:

1. ``environment``: ``nvidia-smi`` (name, driver, power, SM clock), onnxruntime's version
   and execution providers, torch's version and CUDA availability.
2. ``nvml_meter``: :class:`latency_models.NvmlMeter` (opened by ``open_meter("nvml")`` as the
   timing loop does) over ~2 s of idle and over ~3 s of an 8192x8192 bf16 torch matmul loop,
   against ``nvmlDeviceGetPowerUsage`` (and the instant-power field, where NVML has it)
   sampled every 50 ms in a background thread: mean watts of each and their ratio, the
   counter's update period, TFLOP/s and mJ per matmul.
3. ``onnx_graphs``: 20 fp32 graphs of the wide sweep (``sweep_graphs(wide=True)``) timed by
   ``latency_models.measurement._bench.benchmark`` on onnxruntime's CUDA provider with the
   NVML meter,
   and on the CPU provider (16 threads) for comparison. Without a working CUDA provider
   (absent, or listed but falling back to CPU) only the CPU numbers are taken.
4. ``reference_conv``: one 3x3 conv (1x256x56x56, 256 channels) in torch on CUDA and through
   onnxruntime (CUDA provider if it works, else CPU).

Every section catches its own errors and records them; per-section time budgets keep the
whole run under ``--budget-s`` (default 200 s). Needs only torch, numpy, onnx, onnxruntime
and nvidia-ml-py (not an installed hwnas); run from the repository root:

    PYTHONPATH=. python3 experiments/gpu_device_check.py --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # latency_models from this checkout, hwnas not installed

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
MATMUL_N = 8192
IDLE_S = 2.0
LOAD_WARMUP_S = 1.0
LOAD_S = 3.0
SAMPLE_PERIOD_S = 0.05
CONV_SHAPE = (1, 256, 56, 56)  # input of the reference 3x3 conv, 256 -> 256 channels
REFERENCE_CONV_S = 25.0  # kept back from the graph sweep for the reference conv


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _attempt(out: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """``out[key] = fn()``, or the error string under ``out[key + '_error']``."""
    try:
        out[key] = fn()
    except Exception as exc:
        out[f"{key}_error"] = _error(exc)
        return None
    return out[key]


def _nvml_index() -> int:
    """The NVML index ``open_meter("nvml")`` reads (first entry of CUDA_VISIBLE_DEVICES)."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(gpu) if gpu.isdigit() else 0


# --- 1. environment -------------------------------------------------------------------------


def _nvidia_smi(fields: str) -> str:
    proc = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nvidia-smi exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _onnxruntime_info() -> dict[str, Any]:
    import onnxruntime as ort

    return {"version": ort.__version__, "providers": ort.get_available_providers()}


def _torch_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if info["cuda_available"]:
        info["device"] = torch.cuda.get_device_name(0)
    return info


def environment(out: dict[str, Any]) -> None:
    out["python"] = platform.python_version()
    out["cpu_count"] = os.cpu_count()
    out["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    _attempt(out, "nvidia_smi", lambda: _nvidia_smi("name,driver_version,power.draw,clocks.sm"))
    _attempt(
        out,
        "nvidia_smi_extra",
        lambda: _nvidia_smi("power.limit,clocks.max.sm,memory.total,mig.mode.current"),
    )
    _attempt(out, "onnxruntime", _onnxruntime_info)
    _attempt(out, "torch", _torch_info)


# --- 2. the NVML meter -------------------------------------------------------------------------


class PowerSampler:
    """Samples NVML power, the energy counter and the SM clock every ``period_s`` in a thread.

    A sample is ``(monotonic s, averaged W, instant W or None, counter mJ, SM MHz)``.
    """

    def __init__(self, index: int, period_s: float = SAMPLE_PERIOD_S) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._period_s = period_s
        self.instant_field: int | None = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)
        try:
            self._instant_w()
        except Exception:
            self.instant_field = None
        self.samples: list[tuple[float, float, float | None, int, int]] = []
        self.error = ""
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _instant_w(self) -> float | None:
        if self.instant_field is None:
            return None
        value = self._nvml.nvmlDeviceGetFieldValues(self._handle, [self.instant_field])[0]
        if value.nvmlReturn != self._nvml.NVML_SUCCESS:
            raise RuntimeError(f"instant power field: NVML return {value.nvmlReturn}")
        return float(value.value.uiVal) / 1e3

    def _loop(self) -> None:
        nvml, h = self._nvml, self._handle
        while not self._halt.is_set():
            try:
                self.samples.append(
                    (
                        time.monotonic(),
                        nvml.nvmlDeviceGetPowerUsage(h) / 1e3,
                        self._instant_w(),
                        int(nvml.nvmlDeviceGetTotalEnergyConsumption(h)),
                        int(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
                    )
                )
            except Exception as exc:
                self.error = _error(exc)
                return
            self._halt.wait(self._period_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=5)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Means of the samples taken in ``[t0, t1]``, and the counter's own mean watts."""
        rows = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(rows) < 2:
            return {"n_samples": len(rows)}
        instant = [s[2] for s in rows if s[2] is not None]
        span = rows[-1][0] - rows[0][0]
        usage_w = statistics.fmean(s[1] for s in rows)
        counter_w = (rows[-1][3] - rows[0][3]) / 1e3 / span if span > 0 else None
        return {
            "n_samples": len(rows),
            "power_usage_w": usage_w,
            "power_instant_w": statistics.fmean(instant) if instant else None,
            "counter_w": counter_w,
            "counter_over_power_usage": counter_w / usage_w if counter_w and usage_w else None,
            "sm_clock_mhz": statistics.fmean(s[4] for s in rows),
        }

    def counter_update_ms(self) -> float | None:
        """Median time between changes of the energy counter (its update period)."""
        changes = [b[0] for a, b in itertools.pairwise(self.samples) if b[3] != a[3]]
        gaps = [(b - a) * 1e3 for a, b in itertools.pairwise(changes)]
        return statistics.median(gaps) if gaps else None


def _ratios(meter_w: float | None, sampled: dict[str, Any]) -> dict[str, float | None]:
    """The meter's mean watts over each sampled mean (1.0 = agreement)."""
    out: dict[str, float | None] = {}
    for key in ("power_usage_w", "power_instant_w", "counter_w"):
        ref = sampled.get(key)
        out[f"meter_over_{key}"] = meter_w / ref if meter_w is not None and ref else None
    return out


def _meter_window(meter: Any, e0: tuple[int, ...] | None, t0: float) -> dict[str, Any]:
    """Joules and mean watts of ``meter`` since reading ``e0`` at ``t0``."""
    if meter is None or e0 is None:
        return {"meter_j": None, "meter_w": None}
    joules = meter.joules_between(e0, meter.read())
    return {"meter_j": joules, "meter_w": joules / (time.monotonic() - t0)}


def _matmul_load(meter: Any, sampler: PowerSampler | None, deadline: float) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device here")
    n = MATMUL_N
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty_like(a)

    def burst(k: int) -> None:
        for _ in range(k):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()

    burst(3)  # cuBLAS initialisation
    warm_end = time.monotonic() + LOAD_WARMUP_S
    while time.monotonic() < warm_end:  # clocks and power settle
        burst(10)
    if time.monotonic() + LOAD_S > deadline:
        raise TimeoutError("no time left for the load window")
    e0 = meter.read() if meter is not None else None
    t0 = time.monotonic()
    count = 0
    while time.monotonic() - t0 < LOAD_S:
        burst(10)
        count += 10
    measured = _meter_window(meter, e0, t0)
    t1 = time.monotonic()
    result: dict[str, Any] = {
        "matmul": f"{n}x{n} @ {n}x{n} bf16",
        "matmuls": count,
        "seconds": t1 - t0,
        "tflops": 2 * n**3 * count / (t1 - t0) / 1e12,
        **measured,
        "energy_per_matmul_mj": measured["meter_j"] / count * 1e3
        if measured["meter_j"] is not None
        else None,
    }
    if sampler is not None:
        result["sampled"] = sampler.window(t0, t1)
        result["sampled_second_half"] = sampler.window((t0 + t1) / 2, t1)  # past any lag
        result.update(_ratios(measured["meter_w"], result["sampled"]))
    return result


def nvml_meter(out: dict[str, Any], deadline: float) -> None:
    from latency_models.devices._meters import open_meter

    meter, reason = open_meter("nvml")
    out["nvml_index"] = _nvml_index()
    out["meter"] = type(meter).__name__ if meter is not None else None
    out["meter_unavailable"] = reason or None
    if meter is not None:
        out["meter_min_window_s"] = meter.min_window_s
    sampler: PowerSampler | None = _attempt(out, "sampler", lambda: PowerSampler(_nvml_index()))
    if sampler is not None:
        out["sampler"] = {
            "period_s": SAMPLE_PERIOD_S,
            "instant_power_field": sampler.instant_field,
        }
        sampler.start()
    try:
        _attempt(out, "torch_cuda_init", lambda: _torch_info()["cuda_available"])
        # idle, with the CUDA context (if any) open, as during the ONNX measurements
        e0 = meter.read() if meter is not None else None
        t0 = time.monotonic()
        time.sleep(IDLE_S)
        idle = _meter_window(meter, e0, t0)
        if sampler is not None:
            idle["sampled"] = sampler.window(t0, time.monotonic())
            idle.update(_ratios(idle["meter_w"], idle["sampled"]))
        out["idle"] = idle
        _attempt(out, "load", lambda: _matmul_load(meter, sampler, deadline))
    finally:
        if sampler is not None:
            sampler.stop()
            out["sampler"]["error"] = sampler.error or None
            out["sampler"]["counter_update_ms"] = sampler.counter_update_ms()
            out["sampler"]["samples"] = [
                [round(v, 4) if isinstance(v, float) else v for v in s] for s in sampler.samples
            ]


# --- 3. ONNX graphs on onnxruntime's CUDA provider ----------------------------------------------


def _probe_cuda_ep() -> list[str]:
    """The providers a CUDA-first session really got (onnxruntime falls back silently)."""
    import onnxruntime as ort

    from latency_models import graph_bytes, kernel_graph

    model = graph_bytes(kernel_graph("conv", cin=8, cout=8, size=8))
    return list(ort.InferenceSession(model, providers=[CUDA_EP, CPU_EP]).get_providers())


def _cuda_ep_works(out: dict[str, Any]) -> bool:
    import onnxruntime as ort

    if CUDA_EP not in ort.get_available_providers():
        out["cuda_ep"] = "onnxruntime build here has no CUDA provider"
        return False
    got = _attempt(out, "cuda_probe_providers", _probe_cuda_ep)
    if (got is None or CUDA_EP not in got) and hasattr(ort, "preload_dlls"):
        # CUDA/cuDNN libraries not found: load those of the nvidia-* wheels, try again
        _attempt(out, "preload_dlls", lambda: ort.preload_dlls() or "called")
        got = _attempt(out, "cuda_probe_providers_after_preload", _probe_cuda_ep)
    works = got is not None and CUDA_EP in got
    out["cuda_ep"] = (
        "works" if works else "listed, but sessions fall back to CPU (CUDA libraries?)"
    )
    return works


_KEEP = (
    "latency_ms", "p10_ms", "p90_ms", "rse", "n_runs", "timed_s", "energy_mj", "energy_source",
)  # fmt: skip


def _bench(model: bytes, **kwargs: Any) -> dict[str, Any]:
    from latency_models.measurement._bench import benchmark

    result = benchmark(model, **kwargs)
    kept = {k: result[k] for k in _KEEP}
    if result["energy_note"]:
        kept["energy_note"] = result["energy_note"]
    return kept


def onnx_graphs(
    out: dict[str, Any],
    deadline: float,
    n_graphs: int,
    idle_w: float | None,
    save: Callable[[], None],
) -> None:
    from latency_models import graph_bytes, graph_features, sweep_graphs

    cuda = _cuda_ep_works(out)
    threads = min(16, os.cpu_count() or 1)
    out["cpu_threads"] = threads
    out["idle_w"] = idle_w
    graphs = list(sweep_graphs(n_graphs, seed=0, wide=True, int8_share=0.0, mixed_share=0.0))
    rows: list[dict[str, Any]] = []
    out["graphs"] = rows
    for name, graph in graphs:
        if time.monotonic() > deadline:
            out["stopped"] = f"time budget spent after {len(rows)} of {len(graphs)} graphs"
            break
        model = graph_bytes(graph)
        row: dict[str, Any] = {"name": name, "macs": graph_features(graph).totals["macs"]}
        rows.append(row)
        if cuda:
            on_gpu = partial(
                _bench, model, providers=(CUDA_EP, CPU_EP), energy_meter="nvml", max_seconds=1.0
            )
            gpu = _attempt(row, "cuda", on_gpu)
            if gpu and gpu["energy_mj"] is not None and idle_w is not None:
                # board energy minus idle power over the mean time of one run (W x ms = mJ)
                mean_ms = gpu["timed_s"] / gpu["n_runs"] * 1e3
                gpu["energy_above_idle_mj"] = gpu["energy_mj"] - idle_w * mean_ms
        on_cpu = partial(_bench, model, providers=(CPU_EP,), threads=threads, max_seconds=0.5)
        _attempt(row, "cpu", on_cpu)
        save()  # a run killed from outside keeps the graphs measured so far


# --- 4. reference conv: torch CUDA vs onnxruntime ------------------------------------------------


def _torch_conv_ms() -> float:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device here")
    c = CONV_SHAPE[1]
    x = torch.randn(*CONV_SHAPE, device="cuda")
    w = torch.randn(c, c, 3, 3, device="cuda")
    for _ in range(10):
        torch.nn.functional.conv2d(x, w, padding=1)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.conv2d(x, w, padding=1)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / 10 * 1e3)
    return statistics.median(times)


def reference_conv(out: dict[str, Any], deadline: float, cuda: bool) -> None:
    from latency_models import graph_bytes, kernel_graph

    if time.monotonic() > deadline:
        raise TimeoutError("time budget spent before the reference conv")
    _, c, size, _ = CONV_SHAPE
    out["conv"] = f"3x3 conv, input {CONV_SHAPE}, {c} -> {c} channels, fp32, no bias/BN/act"
    out["gmacs"] = size * size * c * c * 9 / 1e9
    model = graph_bytes(kernel_graph("conv", cin=c, cout=c, size=size, bn=False, act=None))
    providers = (CUDA_EP, CPU_EP) if cuda else (CPU_EP,)
    out["onnxruntime_providers"] = list(providers)
    threads = min(16, os.cpu_count() or 1)
    _attempt(
        out,
        "onnxruntime",
        lambda: _bench(
            model,
            providers=providers,
            threads=threads,
            max_seconds=1.0,
            energy_meter="nvml" if cuda else "none",
        ),
    )
    _attempt(out, "torch_cuda_ms", _torch_conv_ms)
    out["torch_note"] = "torch default: cudnn.allow_tf32 is on for convs"


# --- driver ---------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary(report: dict[str, Any]) -> list[str]:
    env, meter = report.get("environment", {}), report.get("nvml_meter", {})
    graphs = report.get("onnx_graphs", {})
    lines = [
        f"nvidia-smi: {env.get('nvidia_smi') or env.get('nvidia_smi_error')}",
        f"onnxruntime: {env.get('onnxruntime') or env.get('onnxruntime_error')}",
        f"torch: {env.get('torch') or env.get('torch_error')}",
        f"NVML meter: {meter.get('meter') or meter.get('meter_unavailable')}",
    ]
    idle, load = meter.get("idle", {}), meter.get("load", {})
    if idle.get("meter_w") is not None:
        lines.append(
            f"  idle: meter {idle['meter_w']:.1f} W, "
            f"meter/power_usage {_fmt(idle.get('meter_over_power_usage_w'))}"
        )
    if load:
        lines.append(
            f"  load: {load.get('tflops', 0):.0f} TFLOP/s, meter {_fmt(load.get('meter_w'))} W, "
            f"{_fmt(load.get('energy_per_matmul_mj'))} mJ/matmul, "
            f"meter/power_usage {_fmt(load.get('meter_over_power_usage_w'))}"
        )
    for key in ("sampler_error", "load_error"):
        if key in meter:
            lines.append(f"  {key}: {meter[key]}")
    if "sampler" in meter:
        update_ms = _fmt(meter["sampler"].get("counter_update_ms"))
        lines.append(f"  energy counter update period: {update_ms} ms")
    lines.append(f"CUDA EP: {graphs.get('cuda_ep')}")
    for row in graphs.get("graphs", []):
        gpu, cpu = row.get("cuda") or {}, row.get("cpu") or {}
        gpu_text = f"cuda {gpu['latency_ms']:.3f} ms {_fmt(gpu['energy_mj'])} mJ, " if gpu else ""
        cpu_text = f"cpu {cpu['latency_ms']:.3f} ms" if cpu else row.get("cpu_error", "")
        lines.append(f"  {row['name']}: {gpu_text}{cpu_text}")
    conv = report.get("reference_conv", {})
    if conv:
        ort_ms = (conv.get("onnxruntime") or {}).get("latency_ms")
        lines.append(
            f"reference conv: onnxruntime {_fmt(ort_ms)} ms, torch cuda "
            f"{_fmt(conv.get('torch_cuda_ms') or conv.get('torch_cuda_ms_error'))}"
        )
    for name, section in report.items():
        if isinstance(section, dict) and "error" in section:
            lines.append(f"section {name} failed: {section['error']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--graphs", type=int, default=20, help="sweep graphs to measure")
    parser.add_argument("--budget-s", type=float, default=200.0, help="total time budget")
    args = parser.parse_args()

    start = time.monotonic()
    end = start + args.budget_s
    report: dict[str, Any] = {
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": args.budget_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=1, default=str))

    def section(name: str, fn: Callable[..., None], *fn_args: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        report[name] = out
        t0 = time.monotonic()
        try:
            fn(out, *fn_args)
        except Exception as exc:
            out["error"] = _error(exc)
            out["traceback"] = traceback.format_exc(limit=4)
        out["seconds"] = round(time.monotonic() - t0, 2)
        save()
        print(f"[{time.monotonic() - start:6.1f} s] {name} done", flush=True)
        return out

    section("environment", environment)
    idle_w = section("nvml_meter", nvml_meter, end).get("idle", {}).get("meter_w")
    graphs = section("onnx_graphs", onnx_graphs, end - REFERENCE_CONV_S, args.graphs, idle_w, save)
    section("reference_conv", reference_conv, end, graphs.get("cuda_ep") == "works")
    report["total_s"] = round(time.monotonic() - start, 2)
    save()
    print("\n".join(_summary(report)))
    print(f"total {report['total_s']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
