"""``hwnas demo``: the whole loop on a bundled task, in minutes on a laptop.

Profile the device (a short budget; graphs already in the store are reused), measure the
base model, search with a latency budget of a fraction of the base model's measured latency
(every trained candidate measured on the device), show the Pareto front, export the most
accurate trial whose measured latency meets the budget, and measure it against the base
model side by side. An export that misses the budget side by side is not kept: the next
candidate is tried, and where none meets it the demo says so and exports nothing.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nas._errors import BudgetError, RunError, UsageError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo found, all latencies measured on the device.

    Attributes:
        run_dir: The search's run folder (``hwnas pareto RUN_DIR`` shows it again).
        export_dir: The exported model's folder, or None if no trial met the budget.
        base_latency_ms: The base model's measured latency.
        latency_ms: The exported model's measured latency (side by side with the base).
        budget_fraction: The latency budget as a fraction of the base model's latency.
        predicted_ms: The exported trial's latency as the search's predictor saw it.
        search_measured_ms: The exported trial's latency measured during the search.
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
    budget_fraction: float | None = None
    predicted_ms: float | None = None
    search_measured_ms: float | None = None
    tried: tuple[int, ...] = ()

    @property
    def meets_budget(self) -> bool | None:
        """Whether the export meets the budget side by side with the base (None: no budget)."""
        if self.budget_fraction is None or self.latency_ms is None:
            return None
        return self.latency_ms <= self.budget_fraction * self.base_latency_ms

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
    from nas.tasks._tasks import load_task

    start = time.perf_counter()
    spec = get_device(device)
    task_obj = load_task(task)
    echo(
        f"task {task_obj.name} ready ({time.perf_counter() - start:.0f} s): {task_obj.description}"
    )
    _ensure_profile(spec.name, task_obj.name, profile_minutes, echo)
    run_path = Path(run_dir) if run_dir else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="hwnas-demo-") as tmp:
        base_graph, base = _extremes(task_obj, spec, Path(tmp))
        fraction = _latency_fraction(base, budget_fraction, echo)
        if fraction is not None:  # the number the run's budget holds, so both judge alike
            fraction = float(f"{fraction:.4g}")
        budget = {"accuracy_drop": 1.0} if fraction is None else {"latency_ms": f"{fraction:g}x"}
        echo(
            f"base model: {_ms(base['measured']['latency_ms'])} measured on {spec.name} "
            f"(predicted {base['latency_ms']:.3f} ms); searching {trials} trials under "
            + ", ".join(f"{k} <= {v}" for k, v in budget.items())
            + " (every trained candidate measured on the device)"
        )
        try:
            _search(task_obj, spec.name, budget, trials, recovery_steps, workers, run_path, seed)
        except BudgetError as exc:
            if fraction is None:
                raise
            # the search measures the base and the cheapest config again; on graphs of tens of
            # microseconds that can undo the margin chosen above
            echo(
                f"note: the search's own measurement refused the budget ({exc}). Searching the "
                "whole front under accuracy_drop <= 1 instead."
            )
            fraction = None
            _search(task_obj, spec.name, {"accuracy_drop": 1.0}, trials, recovery_steps,
                    workers, run_path, seed)  # fmt: skip
        echo(_front(run_path))
        return _export_within_budget(
            task_obj, spec, base_graph, run_path, fraction, finetune_steps, start, echo, task
        )


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f} ms"


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
    from nas.searching._profile import profile_device

    echo(f"device {device}: no predictor yet; profiling it for {minutes:g} minute(s)")
    result = profile_device(
        device, task=task, budget_minutes=minutes, max_seconds_per_graph=0.5, progress=echo
    )
    echo(
        f"device {device}: profiled {result.n_graphs} graphs in {result.elapsed_s / 60:.1f} min"
        + "".join(
            f"; {target} held-out within 10% {100 * m['within_10']:.0f}%, MAPE {m['mape']:.1f}%"
            for target, m in result.metrics.items()
            if "within_10" in m
        )
    )


def _extremes(task: Any, spec: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
    """The base model's graph, and the base metrics the search itself will take.

    The base model and the cheapest config are measured interleaved on the device, exactly
    as the search measures them, so that the budget chosen here passes its checks.
    """
    from nas.searching._base import base_metrics
    from nas.searching._config import SearchConfig
    from nas.searching._search import build_context

    config = SearchConfig(task=task.name, device=spec.name, run_dir=str(folder))
    ctx = build_context(config, task=task, device=spec)
    base, graph = base_metrics(ctx)
    base_graph = folder / "base.onnx"
    base_graph.write_bytes(graph)
    return base_graph, base


NO_GAIN = 0.85
"""A cheapest config measured above this share of the base latency leaves no room for a
latency budget that repeat measurements of sub-millisecond graphs keep apart."""


def _latency_fraction(
    base: dict[str, Any], fraction: float, echo: Callable[[str], None]
) -> float | None:
    """``fraction``, raised where even the cheapest config cannot meet it (by measurement).

    Tiny models are dominated by per-kernel overhead, so a third of their latency can be out
    of reach; the demo then says so and searches halfway between the cheapest config and the
    base model. Where no config is clearly faster than the base (:data:`NO_GAIN`), it returns
    None: the demo searches the whole front with an accuracy budget instead of failing.
    """
    base_ms = base["measured"]["latency_ms"] or base["latency_ms"]
    smallest_ms = (
        base["smallest_measured"]["latency_ms"] or base["smallest_predicted"]["latency_ms"]
    )
    if fraction * base_ms >= 1.05 * smallest_ms:
        return fraction
    if smallest_ms >= NO_GAIN * base_ms:
        echo(
            f"note: no config is clearly faster than the base model ({smallest_ms:.4f} ms vs "
            f"{base_ms:.4f} ms measured): its latency is per-kernel overhead on this device. "
            f"Searching the whole front under accuracy_drop <= 1 instead."
        )
        return None
    raised = float((smallest_ms + 0.5 * (base_ms - smallest_ms)) / base_ms)
    echo(
        f"note: {fraction:.2f} of the base latency ({fraction * base_ms:.4f} ms) is below the "
        f"cheapest config's measured {smallest_ms:.4f} ms; using {raised:.2f}x instead"
    )
    return raised


def _search(
    task: Any,
    device: str,
    budget: dict[str, Any],
    trials: int,
    recovery_steps: int,
    workers: int,
    run_dir: Path,
    seed: int,
) -> None:
    from nas.searching._search import search

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
    from nas.results._pareto import pareto_table

    return f"Pareto front of {run_dir} (hwnas pareto {run_dir}):\n{pareto_table(run_dir)}"


MAX_EXPORT_TRIES = 3
"""Candidates the demo exports and measures before it gives up on the budget."""


def _export_within_budget(
    task: Any,
    spec: Any,
    base_graph: Path,
    run_dir: Path,
    fraction: float | None,
    finetune_steps: int,
    start: float,
    echo: Callable[[str], None],
    task_spec: str,
) -> DemoResult:
    """Export the most accurate trial that meets the budget side by side with the base.

    Candidates come in order of accuracy among the trials whose latency measured during the
    search meets the budget; each export is measured interleaved with the base model, and
    one that misses ``fraction`` of the base latency is removed and the next one tried.
    """
    from nas.results._export import candidates
    from nas.results._pareto import read_run

    results = read_run(run_dir)
    rows, _ = candidates(results)
    tried: list[int] = []
    compared: DemoResult | None = None
    for row in rows[:MAX_EXPORT_TRIES]:
        exported = _export(run_dir, row.number, finetune_steps, echo, task_spec)
        if exported is None:
            continue
        tried.append(row.number)
        compared = _compare(task, spec, base_graph, run_dir, exported, start, fraction, row)
        if compared.meets_budget is not False:
            echo(_summary(compared, spec.name))
            return replace(compared, tried=tuple(tried))
        ratio = (compared.latency_ms or 0.0) / compared.base_latency_ms
        echo(
            f"trial {row.number} measured {compared.latency_ms:.4f} ms side by side with the "
            f"base's {compared.base_latency_ms:.4f} ms: {ratio:.2f}x, over the budget's "
            f"{fraction:.2f}x; not kept"
        )
        shutil.rmtree(exported.out_dir, ignore_errors=True)
    none = _compare(task, spec, base_graph, run_dir, None, start, fraction, None)
    none = replace(none, tried=tuple(tried))
    if not rows:
        echo(
            "no trial meets the budget by measurement. Run more trials (--trials), loosen "
            f"--budget-fraction, or pick a trial yourself with `hwnas export {run_dir} --trial N`."
        )
    echo(_summary(none, spec.name))
    return none


def _export(
    run_dir: Path, trial: int, finetune_steps: int, echo: Callable[[str], None], task: str
) -> Any:
    from nas.results._export import ExportError, export

    try:  # the task is the one the user named on the command line: trusted
        result = export(
            run_dir,
            trial,
            out_dir=run_dir / "export",
            finetune_steps=finetune_steps,
            force=True,
            task=task,
        )
    except (RunError, ExportError) as exc:
        echo(f"trial {trial} not exported: {exc}")
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
    fraction: float | None,
    row: Any,
) -> DemoResult:
    """Measure base and exported graphs side by side, interleaved."""
    from latency_models.measurement._cached import measure_interleaved
    from nas.tasks._onnx_eval import evaluate_onnx

    graphs = {"base": base_graph}
    if exported is not None:
        graphs["export"] = exported.out_dir / "model.onnx"
    # the export measured itself side by side for the relative budget: its report decides
    side = {} if exported is None else exported.report.get("budget_check", {}).get("latency_ms")
    if side and "ratio" in side:
        medians = {"base": float(side["base"]), "export": float(side["export"])}
    else:
        runs = measure_interleaved(graphs, spec, rounds=COMPARE_ROUNDS)
        medians = {name: statistics.median(m.latency_ms for m in ms) for name, ms in runs.items()}
    return DemoResult(
        run_dir=run_dir,
        export_dir=None if exported is None else exported.out_dir,
        base_latency_ms=medians["base"],
        latency_ms=medians.get("export"),
        base_top1=evaluate_onnx(str(base_graph), *_numpy(task.val)),
        # the export's report holds its ONNX top-1 on the same validation data
        top1=None if exported is None else float(exported.report["accuracy"]["onnx_top1"]),
        base_size_bytes=base_graph.stat().st_size,
        size_bytes=None if exported is None else graphs["export"].stat().st_size,
        seconds=time.perf_counter() - start,
        budget_fraction=fraction,
        predicted_ms=None if row is None else row.predicted.get("latency_ms"),
        search_measured_ms=None if row is None else row.measured.get("latency_ms"),
    )


COMPARE_ROUNDS = 5
"""Interleaved rounds of the side-by-side measurement of base and export."""


def _numpy(split: Any) -> tuple[Any, Any]:
    x, y = split
    return x.numpy(), y.numpy()


def _summary(result: DemoResult, device: str) -> str:
    lines = [f"demo finished in {result.seconds / 60:.1f} min; run folder {result.run_dir}"]
    if result.budget_fraction is not None:
        lines.append(
            f"  budget:         latency <= {result.budget_fraction:.2f}x the base model, "
            f"{result.budget_fraction * result.base_latency_ms:.3f} ms side by side"
        )
    lines.append(
        f"  base model:     {result.base_latency_ms:.3f} ms measured on {device}, top-1 "
        f"{result.base_top1:.2f}%, ONNX {result.base_size_bytes / 1024:.0f} KiB"
    )
    if result.latency_ms is None or result.top1 is None or result.size_bytes is None:
        lines.append("  no trial met the budget by measurement, so nothing was exported")
        return "\n".join(lines)
    seen = [
        f"{label} {value:.3f} ms"
        for label, value in (
            ("predicted", result.predicted_ms),
            ("measured in the search", result.search_measured_ms),
        )
        if value is not None
    ]
    lines.append(
        f"  exported model: {result.latency_ms:.3f} ms measured side by side"
        + (f" ({', '.join(seen)})" if seen else "")
        + f", top-1 {result.top1:.2f}%, ONNX {result.size_bytes / 1024:.0f} KiB  "
        f"({result.export_dir})"
    )
    verdict = {True: "meets the budget", False: "misses the budget", None: "no latency budget"}
    lines.append(
        f"  change:         {result.speedup:.2f}x faster (measured, side by side; "
        f"{verdict[result.meets_budget]}), top-1 {result.top1 - result.base_top1:+.2f} points, "
        f"size {result.size_bytes / result.base_size_bytes:.2f}x"
    )
    return "\n".join(lines)
