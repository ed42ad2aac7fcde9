"""What an export writes besides the graph: the ``model.pt`` checkpoint and ``report.json``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.results._rebuild import Built
from nas.searching._run import Run
from nas.searching._trial_row import TrialRow

FORMAT_VERSION = 1
"""Version of the ``model.pt`` and ``report.json`` layouts."""


def checkpoint(built: Built, results: Run, row: TrialRow) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "task": str(results.setting("task")),
        "config": built.config.to_dict(),
        "space": {
            "align": int(built.device.align),
            "bits": [int(b) for b in built.device.precisions],
        },
        "device": built.device.name,
        "trial": row.number,
        "state_dict": {k: v.detach().clone() for k, v in built.model.state_dict().items()},
    }


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import optuna
    import torch

    from nas._version import __version__

    return {
        "hwnas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "optuna": optuna.__version__,
    }


def file_info(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"sha256": digest, "bytes": path.stat().st_size}


def _accuracy_entry(accuracy: Mapping[str, Any], row: TrialRow, results: Run) -> dict[str, Any]:
    """The report's ``accuracy``: top-1 in %, or the task's metric in its own sign.

    The search keeps a lower-is-better metric as its negation (``neg_<metric>``); the report
    gives the metric itself.
    """
    base = results.base_value("accuracy")[0]
    if "onnx" not in accuracy:
        return {**accuracy, "metric": "top1 % on the validation set",
                "search_top1": row.accuracy, "base_top1": base}  # fmt: skip
    sign = 1.0 if accuracy["higher_is_better"] else -1.0
    better = "higher" if accuracy["higher_is_better"] else "lower"
    return {
        **accuracy,
        "metric": f"{accuracy['metric']} on the validation set ({better} is better)",
        "search": None if row.accuracy is None else sign * row.accuracy,
        "base": None if base is None else sign * base,
    }


def export_report(
    built: Built,
    *,
    results: Run,
    row: TrialRow,
    why: str,
    finetune_steps: int,
    seed: int,
    verification: dict[str, Any],
    accuracy: dict[str, Any],
    measured: dict[str, Any],
    files: dict[str, Any],
    side_by_side: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from dataclasses import asdict

    device = {k: v for k, v in asdict(built.device).items() if k != "token"}
    checks = budget_check(measured, results, side_by_side)
    predicted = dict(row.predicted) or {k: v for k, v in row.values.items() if k != "accuracy"}
    return {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(results.run_dir.resolve()),
        "trial": row.number,
        "selection": why,
        "task": str(results.setting("task")),
        "summary": row.summary or built.space.summarize(built.config),
        "config": built.config.to_dict(),
        "finetune": {"steps": finetune_steps, "seed": seed, "method": "distillation"},
        "accuracy": _accuracy_entry(accuracy, row, results),
        "verification": verification,
        "measured": measured,
        "measured_in_search": dict(row.measured),
        "predicted": predicted,
        "budget": dict(results.budget),
        "budget_met": _budget_met(checks),
        "budget_check": checks,
        "predicted_energy_source": row.energy_source or None,
        "device": device,
        "versions": versions(),
        "files": files,
    }


MEASURED_COSTS = ("latency_ms", "energy_mj")
"""The budget's costs an export judges by its own measurement (memory is computed)."""


def relative_costs(results: Run) -> dict[str, float]:
    """The run's relative cost limits, as fractions of the base model (``{"latency_ms": 0.5}``)."""
    from nas.searching._budget import parse_budget

    relative = parse_budget(results.setting("budget") or {}).relative
    return {k: float(v) for k, v in relative.items() if k in MEASURED_COSTS}


def budget_check(
    measured: Mapping[str, Any], results: Run, side_by_side: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """How the export's measured costs stand against the run's limits, one entry per cost.

    A relative limit is judged by the export's cost over the base model's, measured side by
    side (:func:`~nas.results._rebuild.measure_side_by_side`); an absolute one by the export's
    own measurement. ``met`` is None where a cost is unmeasured.
    """
    relative = relative_costs(results)
    checks: dict[str, dict[str, Any]] = {}
    for key, limit in results.budget.items():
        if key not in MEASURED_COSTS:
            continue
        base = (side_by_side or {}).get("base", {}).get(key)
        ours = (side_by_side or {}).get("export", {}).get(key)
        if key in relative and base and ours is not None:
            ratio = float(ours) / float(base)
            checks[key] = {"judged": "side by side with the base model", "base": base,
                           "export": ours, "ratio": ratio, "limit": f"{relative[key]:g}x",
                           "rounds": side_by_side.get("rounds") if side_by_side else None,
                           "met": ratio <= relative[key]}  # fmt: skip
            continue
        value = measured.get(key)
        checks[key] = {"judged": "against the limit", "export": value, "limit": limit,
                       "met": None if value is None else float(value) <= limit}  # fmt: skip
    return checks


def _budget_met(checks: Mapping[str, Mapping[str, Any]]) -> bool | None:
    """Whether every cost limit is met (None: no limit, or a cost unmeasured)."""
    met = [c["met"] for c in checks.values()]
    if not met or any(m is None for m in met):
        return None
    return all(met)


__all__ = [
    "FORMAT_VERSION",
    "budget_check",
    "checkpoint",
    "export_report",
    "file_info",
    "relative_costs",
    "versions",
]
