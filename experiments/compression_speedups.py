"""Measured speedups of real compression in onnxruntime.

ResNet-18 at 224x224 (written from the paper in tests/search_spaces/archs.py, random weights),
one thread, batch 1: base fp32 vs uniform width 0.5, all-int8, and width 0.5 + int8. Variants
are timed interleaved (round-robin, many rounds) in one process and compared by medians, since
the machine is shared. The bundled models get the same table when ``nas.get_task`` exists,
plus the top-1 of their int8 export on the task's validation set.

    HWNAS_HOME=/tmp/hwnas-home-space python experiments/compression_speedups.py [--rounds 60]
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "search_spaces"))  # reference architectures

from search_spaces import CompressionSpace, analyze, export_onnx  # noqa: E402

TARGETS = {"width0.5": 2.5, "int8": 2.0, "width0.5+int8": 5.0}


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _variants(space: CompressionSpace) -> dict[str, Any]:
    return {
        "base": space.identity(),
        "width0.5": space.uniform(width=0.5),
        "int8": space.uniform(bits=8),
        "width0.5+int8": space.uniform(width=0.5, bits=8),
    }


def _export_all(model: torch.nn.Module, x: torch.Tensor, calib: torch.Tensor, tmp: Path) -> dict:
    space = analyze(model, x)
    graphs = {}
    for name, config in _variants(space).items():
        applied = space.apply(model, config)
        graphs[name] = export_onnx(applied, config, x, tmp / f"{name}.onnx", calibration=calib)
    return graphs


def _time_interleaved(graphs: dict, x: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    sessions = {name: _session(g.path) for name, g in graphs.items()}
    feed = {"input": x}
    inner = {}
    for name, sess in sessions.items():
        for _ in range(3):
            sess.run(None, feed)
        start = time.perf_counter()
        sess.run(None, feed)
        inner[name] = max(1, int(0.005 / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                sess.run(None, feed)
            samples[name].append((time.perf_counter() - start) * 1e3 / inner[name])
    base = statistics.median(samples["base"])
    return {
        name: {
            "median_ms": round(statistics.median(s), 4),
            "p10_ms": round(float(np.percentile(s, 10)), 4),
            "p90_ms": round(float(np.percentile(s, 90)), 4),
            "speedup": round(base / statistics.median(s), 2),
            "runs_per_sample": inner[name],
        }
        for name, s in samples.items()
    }


def _resnet18(rounds: int, tmp: Path) -> dict[str, Any]:
    import archs

    torch.manual_seed(0)
    model = archs.randomize_bn(archs.ResNet18(num_classes=1000, width=64))
    x = torch.randn(1, 3, 224, 224)
    graphs = _export_all(model, x, torch.randn(16, 3, 224, 224), tmp)
    return {
        "input": [1, 3, 224, 224],
        "export_s": {k: round(g.export_s, 2) for k, g in graphs.items()},
        "variants": _time_interleaved(graphs, x.numpy(), rounds),
    }


def _bundled(name: str, rounds: int, tmp: Path) -> dict[str, Any]:
    from nas import get_task
    from nas.tasks._onnx_eval import evaluate_onnx

    task = get_task(name)
    X_train, _ = task.train
    X_val, y_val = task.val
    graphs = _export_all(task.model, task.example_input, X_train[:64], tmp)
    top1 = {
        k: round(float(evaluate_onnx(graphs[k].path, X_val, y_val)), 2) for k in ("base", "int8")
    }
    return {
        "input": list(task.example_input.shape),
        "export_s": {k: round(g.export_s, 2) for k, g in graphs.items()},
        "variants": _time_interleaved(graphs, task.example_input.numpy(), rounds * 4),
        "top1": {**top1, "int8_drop_points": round(top1["base"] - top1["int8"], 2)},
    }


def _print(results: dict[str, Any]) -> None:
    print(
        f"{'model':<22}{'variant':<16}{'median ms':>11}{'p10':>9}{'p90':>9}{'speedup':>9}  target"
    )
    for model, res in results["models"].items():
        for variant, r in res["variants"].items():
            target = TARGETS.get(variant) if model == "resnet18-224" else None  # ResNet-18 only
            mark = (
                ""
                if target is None
                else f">= {target}x " + ("ok" if r["speedup"] >= target else "MISSED")
            )
            print(f"{model:<22}{variant:<16}{r['median_ms']:>11.3f}{r['p10_ms']:>9.3f}"
                  f"{r['p90_ms']:>9.3f}{r['speedup']:>8.2f}x  {mark}")  # fmt: skip
        if "top1" in res:
            print(
                f"{'':<22}top-1 fp32 {res['top1']['base']:.2f}%  int8 {res['top1']['int8']:.2f}%"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument(
        "--tasks", default="mnist-resnet,mnist-mobilenetv2", help="bundled tasks ('' for none)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "experiments/results/compression_speedups.json")
    )
    args = parser.parse_args()
    import onnxruntime

    results: dict[str, Any] = {
        "host": platform.node(),
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "threads": 1,
        "batch": 1,
        "rounds": args.rounds,
        "note": "medians of interleaved runs on a shared, noisy 2-core machine",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["models"]["resnet18-224"] = _resnet18(args.rounds, Path(tmp))
        try:
            import nas

            names = [n for n in args.tasks.split(",") if n and hasattr(nas, "get_task")]
        except ImportError:
            names = []
        for name in names:
            sub = Path(tmp) / name
            sub.mkdir()
            results["models"][name] = _bundled(name, args.rounds, sub)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    _print(results)


def _reprint(path: str) -> None:
    _print(json.loads(Path(path).read_text()))


if __name__ == "__main__":
    main()
