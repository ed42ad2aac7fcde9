"""The Pareto front of a run, read without changing the run.

The run itself (its trials as :class:`TrialRow` values with their Pareto flags, read through
a read-only storage by :func:`read_run`) is :class:`nas.Run`; ``RunResults`` is its former
name. The formatting to a table, CSV or JSON lives in ``nas.results._table``.

This module imports neither torch, nor ray, nor onnxruntime: ``hwnas pareto`` answers in
well under two seconds on a run of a hundred trials.
"""

from __future__ import annotations

from typing import Any

from nas.results._table import (
    FORMATS,
    budget_text,
    columns,
    energy_label,
    flat_record,
    format_rows,
    unit_of,
)
from nas.searching._config import SETTINGS_FILE
from nas.searching._dominance import direction_of, pareto_mask
from nas.searching._run import Run, RunResults, read_run, run_path
from nas.searching._run_rows import accuracy_floor, sort_rows
from nas.searching._storage import STUDY_DB as STORAGE_FILE
from nas.searching._storage import STUDY_NAME
from nas.searching._trial_row import TrialRow, objective_name


def pareto_table(run: Any, *, include_all: bool = False, fmt: str = "table") -> str:
    """Read ``run`` and format its Pareto front (or every trial) as table, CSV or JSON."""
    return format_rows(read_run(run), include_all=include_all, fmt=fmt)


__all__ = [
    "FORMATS",
    "SETTINGS_FILE",
    "STORAGE_FILE",
    "STUDY_NAME",
    "Run",
    "RunResults",
    "TrialRow",
    "accuracy_floor",
    "budget_text",
    "columns",
    "direction_of",
    "energy_label",
    "flat_record",
    "format_rows",
    "objective_name",
    "pareto_mask",
    "pareto_table",
    "read_run",
    "run_path",
    "sort_rows",
    "unit_of",
]
