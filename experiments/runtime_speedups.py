"""The ResNet-18 table in every runtime: base, width 0.5, all int8 and both, side by side.

ResNet-18 at 224x224 (tests/search_spaces/archs.py, random weights), one thread, batch 1.
Each runtime loads the four graphs (a runtime without an int8 path skips the int8 ones)
and times them round-robin, interleaved with each other in one process, so each speed-up
is a ratio of medians against that runtime's own base measured beside it.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/runtime_speedups.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression_speedups import _export_all


def _time(prepared: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    inner = {}
    for name, p in prepared.items():
        for _ in range(2):
            p.run()
        start = time.perf_counter()
        p.run()
        inner[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in prepared}
    for _ in range(rounds):
        for name, p in prepared.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                p.run()
            samples[name].append((time.perf_counter() - start) * 1e3 / inner[name])
    base = statistics.median(samples["base"])
    return {
        name: {
            "median_ms": round(statistics.median(s), 3),
            "p10_ms": round(float(np.percentile(s, 10)), 3),
            "p90_ms": round(float(np.percentile(s, 90)), 3),
            "speedup": round(base / statistics.median(s), 2),
        }
        for name, s in samples.items()
    }


def main() -> None:
    import archs  # type: ignore[import-not-found]
    import torch

    from latency_models.runtimes import get_runtime, runtime_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runtimes", default=",".join(runtime_names()))
    parser.add_argument("--out", default="experiments/results/runtime_speedups.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = archs.randomize_bn(archs.ResNet18(num_classes=1000, width=64))
    x = torch.randn(1, 3, 224, 224)
    results: dict[str, Any] = {"host": platform.processor() or platform.machine(), "runtimes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = _export_all(model, x, torch.randn(16, 3, 224, 224), Path(tmp))
        data = {name: g.path.read_bytes() for name, g in graphs.items()}
        for name in args.runtimes.split(","):
            backend = get_runtime(name)
            if not backend.available():
                print(f"{name}: not installed, skipped")
                continue
            wanted = [v for v in data if backend.int8 or "int8" not in v]
            prepared = {v: backend.prepare(data[v], threads=1) for v in wanted}
            rounds = args.rounds if name != "tvm" else max(3, args.rounds // 5)
            timed = _time(prepared, rounds)
            for v, p in prepared.items():
                timed[v]["precision"] = p.precision
                p.close()
            results["runtimes"][name] = {"version": backend.version(), "variants": timed}
            row = "  ".join(
                f"{v} {r['median_ms']:.2f} ms ({r['speedup']:.2f}x, {r['precision']})"
                for v, r in timed.items()
            )
            print(f"{name}: {row}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
