"""hwnas: hardware-aware compression search for PyTorch models.

``import nas`` stays fast: torch, ray and onnxruntime are imported only by the functions
that need them. Public names resolve lazily from their private modules (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from nas._errors import BudgetError, NASError, RunError, TaskError, UnknownNameError, UsageError

__version__ = "0.1.0"

# public name -> private module that defines it
_LAZY: dict[str, str] = {
    "profile_device": "nas._profile",
    "evaluate_device": "nas._profile",
    "ProfileResult": "nas._profile",
    "Task": "nas._tasks",
    "get_task": "nas._tasks",
    "list_tasks": "nas._tasks",
    "load_task": "nas._tasks",
    "TASKS": "nas._tasks",
    "TaskFactory": "nas._tasks",
    "register_task": "nas._tasks",
    "evaluate": "nas._train",
    "distill": "nas._train",
    "recover": "nas._train",
    "recalibrate_bn": "nas._train",
    "evaluate_onnx": "nas._onnx_eval",
    "search": "nas._search",
    "run_search": "nas._search",
    "fidelity": "nas._search",
    "Run": "nas._run",
    "open_run": "nas._run",
    "SearchConfig": "nas._config",
    "ConfigError": "nas._config",
    "SAMPLERS": "nas._samplers",
    "OBJECTIVES": "nas._objectives",
    "Objective": "nas._objectives",
    "register_objective": "nas._objectives",
    "BUDGET_KEYS": "nas._budget",
    "Budget": "nas._budget",
    "parse_budget": "nas._budget",
    "parse_objectives": "nas._budget",
    "RunResults": "nas._pareto",
    "TrialRow": "nas._pareto",
    "read_run": "nas._pareto",
    "pareto_table": "nas._pareto",
    "plot_front": "nas._plots",
    "write_report": "nas._report",
    "export": "nas._export",
    "ExportResult": "nas._export",
    "load_exported": "nas._export",
}

__all__ = [
    "BudgetError",
    "NASError",
    "RunError",
    "TaskError",
    "UnknownNameError",
    "UsageError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
