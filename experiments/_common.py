"""Shared pieces of the experiment scripts: the HWNAS_HOME, the machine, the load, timing.

Not part of the library; imported by the scripts in this folder (run them from the repository
root, e.g. ``python experiments/search_vs_baselines.py``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_HOME = "/tmp/hwnas-home-experiments"


def setup_home(home: str | None, *, seed_models_from: str | None = None) -> Path:
    """Point ``$HWNAS_HOME`` at ``home`` (created) before anything reads it.

    Args:
        home: The folder; default ``$HWNAS_HOME`` or :data:`DEFAULT_HOME`.
        seed_models_from: A folder of cached task models (``mnist-*.pt``/``.json``) to copy
            into ``home/models`` when they are not there yet, to skip training.
    """
    path = Path(home or os.environ.get("HWNAS_HOME") or DEFAULT_HOME).resolve()
    (path / "models").mkdir(parents=True, exist_ok=True)
    os.environ["HWNAS_HOME"] = str(path)
    if seed_models_from and Path(seed_models_from).is_dir():
        for src in Path(seed_models_from).glob("*"):
            dst = path / "models" / src.name
            if src.is_file() and not dst.exists():
                shutil.copy2(src, dst)
    return path


def one_thread() -> None:
    """One torch thread (the device is measured on one thread too)."""
    import torch

    torch.set_num_threads(1)


def ensure_profile(device: str, task: str, minutes: float) -> str:
    """Profile ``device`` unless the home already holds its latency predictor."""
    from latency_models import PredictorNotFoundError, device_predictor

    try:
        device_predictor(device)
        return "reused the stored predictor"
    except PredictorNotFoundError:
        from nas.searching._profile import profile_device

        profile_device(device, task=task, budget_minutes=minutes, progress=print)
        return f"profiled for {minutes:g} min"


def machine() -> dict[str, Any]:
    """CPU model, core count, affinity and library versions."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    import nas

    return {
        "hwnas_source": str(Path(nas.__file__).resolve().parents[1]),
        "hwnas_commit": os.environ.get("HWNAS_EXP_COMMIT") or _git_head(),
        "host": platform.node(),
        "cpu_model": model or platform.processor(),
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _git_head() -> str | None:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class LoadSampler:
    """Samples the 1-minute load average every ``every_s`` seconds in a daemon thread."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        """Stop sampling; return min/mean/max of the 1-minute load average."""
        self._stop.set()
        self.samples.append(os.getloadavg()[0])
        return {
            "load1_min": round(min(self.samples), 2),
            "load1_mean": round(statistics.fmean(self.samples), 2),
            "load1_max": round(max(self.samples), 2),
            "n_samples": len(self.samples),
        }


@contextmanager
def timed(out: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time (s) to ``out[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        out[key] = round(out.get(key, 0.0) + time.perf_counter() - start, 2)


def measure_interleaved(
    graphs: dict[str, str | Path], device: str, *, rounds: int = 3, max_seconds: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Median latency of each graph over ``rounds`` round-robin measurements.

    Interleaving spreads a shared machine's drift over every graph alike, so ratios between
    graphs are more trustworthy than separately taken numbers.

    Returns:
        name -> {"latency_ms" (median of the rounds), "rounds_ms"}.
    """
    from latency_models import measure

    samples: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, path in graphs.items():
            m = measure(str(path), device, max_seconds=max_seconds)
            samples[name].append(float(m.latency_ms))
    return {
        name: {"latency_ms": statistics.median(v), "rounds_ms": [round(x, 5) for x in v]}
        for name, v in samples.items()
    }


def pareto_2d(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats in both (lower latency, higher acc)."""
    front: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front
