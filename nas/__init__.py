"""hwnas: hardware-aware compression search for PyTorch models.

``import nas`` stays fast: torch, ray and onnxruntime are imported only by the functions
that need them. Public names resolve lazily from their private modules (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from nas._errors import BudgetError, NASError, RunError, TaskError, UnknownNameError, UsageError
from nas._version import __version__

# public name -> private module that defines it
_LAZY: dict[str, str] = {
    "profile_device": "nas.searching._profile",
    "evaluate_device": "nas.searching._profile",
    "ProfileResult": "nas.searching._profile",
    "Task": "nas.tasks._tasks",
    "get_task": "nas.tasks._tasks",
    "list_tasks": "nas.tasks._tasks",
    "load_task": "nas.tasks._tasks",
    "TASKS": "nas.tasks._tasks",
    "TaskFactory": "nas.tasks._tasks",
    "register_task": "nas.tasks._tasks",
    "evaluate": "nas.tasks._train",
    "distill": "nas.tasks._recovery",
    "recover": "nas.tasks._recovery",
    "recalibrate_bn": "nas.tasks._train",
    "evaluate_onnx": "nas.tasks._onnx_eval",
    "search": "nas.searching._search",
    "run_search": "nas.searching._search",
    "fidelity": "nas.searching._search",
    "Run": "nas.searching._run",
    "open_run": "nas.searching._run",
    "SearchConfig": "nas.searching._config",
    "ConfigError": "nas.searching._config",
    "SAMPLERS": "nas.searching._samplers",
    "OBJECTIVES": "nas._objectives",
    "Objective": "nas._objectives",
    "register_objective": "nas._objectives",
    "BUDGET_KEYS": "nas.searching._budget",
    "Budget": "nas.searching._budget",
    "parse_budget": "nas.searching._budget",
    "parse_objectives": "nas.searching._budget",
    "RunResults": "nas.results._pareto",
    "TrialRow": "nas.results._pareto",
    "read_run": "nas.results._pareto",
    "pareto_table": "nas.results._pareto",
    "plot_front": "nas.results._plots",
    "write_report": "nas.results._report",
    "export": "nas.results._export",
    "ExportResult": "nas.results._export",
    "load_exported": "nas.results._export",
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
