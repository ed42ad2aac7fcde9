"""``hwnas demo``: the whole loop on a bundled task, in minutes on a laptop.

Profile the device (a short budget; graphs already in the store are reused), measure the
base model, search with a latency budget of a fraction of the base model's latency, show the
Pareto front, export the most accurate trial under the budget and measure it against the base
model side by side.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._errors import RunError, UsageError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo found, all latencies measured on the device.

    Attributes:
        run_dir: The search's run folder (``hwnas pareto RUN_DIR`` shows it again).
        export_dir: The exported model's folder, or None if no trial met the budget.
        base_latency_ms: The base model's measured latency.
        latency_ms: The exported model's measured latency.
        base_top1: The base model's top-1 on validation, in %.
        top1: The exported ONNX model's top-1 on validation, in %.
        base_size_bytes: The base model's ONNX file size.
        size_bytes: The exported ONNX file size.
        seconds: Wall-clock time of the whole demo.
    """

    run_dir: Path
    export_dir: Path | None
    base_latency_ms: float
    latency_ms: float | None
    base_top1: float
    top1: float | None
    base_size_bytes: int
    size_bytes: int | None
    seconds: float

    @property
    def speedup(self) -> float | None:
        """Base latency over exported latency (measured, side by side)."""
        return None if self.latency_ms is None else self.base_latency_ms / self.latency_ms


def run_demo(
    *,
    task: str = "mnist-resnet",
    device: str = "local-cpu",
    trials: int = 24,
    recovery_steps: int = 40,
    profile_minutes: float = 2.0,
    budget_fraction: float = 1 / 3,
    finetune_steps: int = 200,
    workers: int = 1,
    run_dir: str | Path | None = None,
    seed: int = 0,
    echo: Callable[[str], None] = _logger.info,
) -> DemoResult:
    """Run the demo loop and return what it measured.

    Args:
        task: Bundled task name or ``module:function`` spec.
        device: Registered device name.
        trials: Search trials.
        recovery_steps: Distillation steps per trial.
        profile_minutes: Budget for profiling the device when it has no predictor yet.
        budget_fraction: The latency budget as a fraction of the base model's latency.
        finetune_steps: Distillation steps for the exported model.
        workers: Trials at once (more than one uses Ray).
        run_dir: Run folder; default ``runs/demo-YYYYmmdd-HHMMSS``.
        seed: Seed of the search and the fine-tunes.
        echo: Where progress lines go (the CLI prints them).

    Raises:
        UsageError: a setting is out of range (checked before any work).
    """
    _check(trials=trials, budget_fraction=budget_fraction, profile_minutes=profile_minutes)
    from latency_models import get_device
    from nas._tasks import load_task

    start = time.perf_counter()
    spec = get_device(device)
    task_obj = load_task(task)
    echo(
        f"task {task_obj.name} ready ({time.perf_counter() - start:.0f} s): {task_obj.description}"
    )
    _ensure_profile(spec.name, task_obj.name, profile_minutes, echo)
    run_path = Path(run_dir) if run_dir else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="hwnas-demo-") as tmp:
        base_graph, predicted_base, predicted_smallest = _extremes(task_obj, spec, Path(tmp))
        limit = _latency_limit(predicted_base, predicted_smallest, budget_fraction, echo)
        budget = {"accuracy_drop": 1.0} if limit is None else {"latency_ms": limit}
        echo(
            f"base model: predicted {predicted_base:.3f} ms on {spec.name}; searching {trials} "
            f"trials under {', '.join(f'{k} <= {v:.4g}' for k, v in budget.items())}"
        )
        _search(task_obj, spec.name, budget, trials, recovery_steps, workers, run_path, seed)
        echo(_front(run_path))
        exported = _export(run_path, finetune_steps, echo)
        return _compare(task_obj, spec, base_graph, run_path, exported, start, echo)


def _check(*, trials: int, budget_fraction: float, profile_minutes: float) -> None:
    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}. Try --trials 24.")
    if not 0.0 < budget_fraction < 1.0:
        raise UsageError(
            f"--budget-fraction must be in (0, 1), got {budget_fraction}. Use 0.33 for a "
            f"budget of a third of the base model's latency."
        )
    if profile_minutes <= 0:
        raise UsageError(f"--profile-minutes must be > 0, got {profile_minutes}. Try 2.")


def _ensure_profile(device: str, task: str, minutes: float, echo: Callable[[str], None]) -> None:
    from latency_models import PredictorNotFoundError, device_predictor

    try:
        device_predictor(device)
        echo(f"device {device}: reusing its stored predictor (`hwnas device eval {device}`)")
        return
    except PredictorNotFoundError:
        pass
    from nas._profile import profile_device

    echo(f"device {device}: no predictor yet; profiling it for {minutes:g} minute(s)")
    result = profile_device(
        device, task=task, budget_minutes=minutes, max_seconds_per_graph=0.5, progress=echo
    )
    echo(f"device {device}: profiled ({result})")


def _extremes(task: Any, spec: Any, folder: Path) -> tuple[Path, float, float]:
    """The base model's graph, and the predicted latency of it and of the cheapest config.

    Computed exactly as the search computes them (same export, same predictor), so that the
    limit chosen here passes the search's own budget checks.
    """
    from nas._config import SearchConfig
    from nas._search import _costs_of, build_context

    config = SearchConfig(task=task.name, device=spec.name, run_dir=str(folder))
    ctx = build_context(config, task=task, device=spec)
    base, base_graph = _costs_of(ctx, ctx.space.identity(), folder, "base")
    smallest, _ = _costs_of(ctx, ctx.space.smallest(), folder, "smallest")
    return base_graph, base["latency_ms"], smallest["latency_ms"]


def _latency_limit(
    base_ms: float, smallest_ms: float, fraction: float, echo: Callable[[str], None]
) -> float | None:
    """``fraction`` of the base latency, raised where even the cheapest config can't meet it.

    Tiny models are dominated by per-kernel overhead, so a third of their latency can be out
    of reach; the demo then says so and searches halfway between the cheapest config and the
    base model. Where no config is predicted faster than the base, it returns None: the demo
    searches the whole front with an accuracy budget instead of failing.
    """
    limit = fraction * base_ms
    if limit >= 1.05 * smallest_ms:
        return limit
    if smallest_ms >= 0.95 * base_ms:
        echo(
            f"note: no config is predicted faster than the base model ({smallest_ms:.4f} ms "
            f"vs {base_ms:.4f} ms): its latency is per-kernel overhead on this device. "
            f"Searching the whole front under accuracy_drop <= 1 instead."
        )
        return None
    raised = smallest_ms + 0.5 * (base_ms - smallest_ms)
    echo(
        f"note: {fraction:.2f} of the base latency ({limit:.4f} ms) is below the cheapest "
        f"config's predicted {smallest_ms:.4f} ms; using {raised:.4f} ms instead"
    )
    return raised


def _search(
    task: Any,
    device: str,
    budget: dict[str, float],
    trials: int,
    recovery_steps: int,
    workers: int,
    run_dir: Path,
    seed: int,
) -> None:
    from nas._search import search

    search(
        task,
        device=device,
        objectives=("accuracy", "latency_ms", "memory_mb"),
        budget=budget,
        n_trials=trials,
        workers=workers,
        run_dir=run_dir,
        seed=seed,
        recovery_steps=recovery_steps,
    )


def _front(run_dir: Path) -> str:
    from nas._pareto import pareto_table

    return f"Pareto front of {run_dir} (hwnas pareto {run_dir}):\n{pareto_table(run_dir)}"


def _export(run_dir: Path, finetune_steps: int, echo: Callable[[str], None]) -> Any:
    from nas._export import ExportError, export

    try:
        result = export(run_dir, out_dir=run_dir / "export", finetune_steps=finetune_steps)
    except (RunError, ExportError) as exc:
        echo(
            f"no export: {exc}. Pick another trial with `hwnas export {run_dir} --trial N`, "
            f"or run more trials (--trials) or loosen --budget-fraction."
        )
        return None
    echo(result.summary())
    return result


def _compare(
    task: Any,
    spec: Any,
    base_graph: Path,
    run_dir: Path,
    exported: Any,
    start: float,
    echo: Callable[[str], None],
) -> DemoResult:
    """Measure base and exported graphs side by side, interleaved, and print the change."""
    from latency_models import measure
    from nas._onnx_eval import evaluate_onnx

    graphs = [base_graph] if exported is None else [base_graph, exported.out_dir / "model.onnx"]
    runs: dict[Path, list[float]] = {graph: [] for graph in graphs}
    for _ in range(3):  # interleaved, so drift on a shared machine hits both alike
        for graph in graphs:
            runs[graph].append(float(measure(str(graph), spec).latency_ms))
    result = DemoResult(
        run_dir=run_dir,
        export_dir=None if exported is None else exported.out_dir,
        base_latency_ms=statistics.median(runs[base_graph]),
        latency_ms=None if exported is None else statistics.median(runs[graphs[1]]),
        base_top1=evaluate_onnx(str(base_graph), *_numpy(task.val)),
        # the export's report holds its ONNX top-1 on the same validation data
        top1=None if exported is None else float(exported.report["accuracy"]["onnx_top1"]),
        base_size_bytes=base_graph.stat().st_size,
        size_bytes=None if exported is None else graphs[1].stat().st_size,
        seconds=time.perf_counter() - start,
    )
    echo(_summary(result, spec.name))
    return result


def _numpy(split: Any) -> tuple[Any, Any]:
    x, y = split
    return x.numpy(), y.numpy()


def _summary(result: DemoResult, device: str) -> str:
    lines = [f"demo finished in {result.seconds / 60:.1f} min; run folder {result.run_dir}"]
    lines.append(
        f"  base model:     {result.base_latency_ms:.3f} ms measured on {device}, top-1 "
        f"{result.base_top1:.2f}%, ONNX {result.base_size_bytes / 1024:.0f} KiB"
    )
    if result.latency_ms is None or result.top1 is None or result.size_bytes is None:
        lines.append("  no trial met the budget, so nothing was exported")
        return "\n".join(lines)
    lines.append(
        f"  exported model: {result.latency_ms:.3f} ms measured, top-1 {result.top1:.2f}%, "
        f"ONNX {result.size_bytes / 1024:.0f} KiB  ({result.export_dir})"
    )
    lines.append(
        f"  change:         {result.speedup:.2f}x faster (measured, side by side), "
        f"top-1 {result.top1 - result.base_top1:+.2f} points, size "
        f"{result.size_bytes / result.base_size_bytes:.2f}x"
    )
    return "\n".join(lines)
