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
) -> dict[str, Any]:
    from dataclasses import asdict

    device = {k: v for k, v in asdict(built.device).items() if k != "token"}
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
        "budget_met": _budget_met(measured, results),
        "predicted_energy_source": row.energy_source or None,
        "device": device,
        "versions": versions(),
        "files": files,
    }


def _budget_met(measured: Mapping[str, Any], results: Run) -> bool | None:
    """Whether the export's own measurement meets the run's cost limits (None: no limit)."""
    limits = {k: v for k, v in results.budget.items() if k in ("latency_ms", "energy_mj")}
    values = [(measured.get(k), v) for k, v in limits.items()]
    if not values or any(value is None for value, _ in values):
        return None
    return all(float(value or 0.0) <= limit for value, limit in values)


__all__ = ["FORMAT_VERSION", "checkpoint", "export_report", "file_info", "versions"]
