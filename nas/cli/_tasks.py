"""``hwnas tasks`` (list the bundled tasks) and ``hwnas demo`` (the base model, measured)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nas.cli._base import BaseCommand


class TasksCommand(BaseCommand):
    """List the registered tasks with their descriptions; trains nothing."""

    name = "tasks"
    help = "list the bundled tasks (a task of your own is 'pkg.module:func' or 'file.py:func')"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add an optional wildcard filter."""
        parser.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'mnist-*'")

    def run(self, args: argparse.Namespace) -> int:
        """Print one line per task."""
        from nas._tasks import TASKS, list_tasks

        names = list_tasks(args.pattern)
        if not names:
            print(f"no task matches {args.pattern!r}; registered: {list_tasks()}")
            return 1
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {TASKS.get(name).description}")
        print(
            "\nA task of your own: 'package.module:function' or 'path/to/file.py:function' "
            "returning a nas.Task (see experiments/custom_task.py)."
        )
        return 0


class DemoCommand(BaseCommand):
    """Load (training on first use) a bundled task; print its accuracy, size and latency."""

    name = "demo"
    help = "train or load the bundled MNIST ResNet and print its accuracy, size and latency"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task choice."""
        parser.add_argument(
            "--task",
            default="mnist-resnet",
            help="bundled task name or 'module:function' / 'file.py:function' "
            "(default: mnist-resnet)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Load the task, evaluate it, export it to ONNX and time it on one CPU thread."""
        from nas._models import count_macs, count_params
        from nas._tasks import load_task
        from nas._train import evaluate

        start = time.perf_counter()
        task = load_task(args.task)
        loaded_s = time.perf_counter() - start
        top1 = evaluate(task.model, *task.val)
        params = count_params(task.model)
        macs = count_macs(task.model, task.example_input)
        print(f"task         {task.name}: {task.description}")
        print(f"ready in     {loaded_s:.1f} s (trained on first use, then loaded from cache)")
        print(f"accuracy     top-1 {top1:.2f}% on {len(task.val[1])} validation images")
        print(f"parameters   {params:,} ({params * 4 / 1e6:.2f} MB as fp32)")
        print(f"MACs         {macs / 1e6:.2f} M per image")
        with tempfile.TemporaryDirectory(prefix="hwnas-demo-") as tmp:
            path = Path(tmp) / f"{task.name}.onnx"
            _export_fp32(task.model, task.example_input, path)
            latency_ms, how = _latency(path)
        print(f"latency      {latency_ms:.3f} ms at batch 1 ({how})")
        return 0


def _export_fp32(model: Any, example_input: Any, path: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example_input,), str(path), dynamo=False, input_names=["input"])


def _latency(path: Path) -> tuple[float, str]:
    """Median latency (ms) and how it was obtained: the measurement harness if present."""
    try:
        from latency_models import measure
    except ImportError:  # the harness is optional here: fall back to a plain timing loop
        return _median_loop(path), "onnxruntime, 1 thread, simple median of 200 timed runs"
    result = measure(str(path), "local-cpu")
    return float(result.latency_ms), (
        f"onnxruntime on local-cpu (1 thread), median of {result.n_runs} runs, "
        f"p10-p90 {result.p10_ms:.3f}-{result.p90_ms:.3f} ms"
    )


def _median_loop(path: Path, runs: int = 200, warmup: int = 30) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


COMMANDS = (TasksCommand, DemoCommand)
