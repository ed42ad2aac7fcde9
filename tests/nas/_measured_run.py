"""A synthetic run whose every trial was measured on the device, as the search records it.

Built on ``_front_data.make_fake_run``: each trial gets ``cost_source = "measured"``, a
``measured`` dict (the objective values, which the search optimised) and a ``predicted``
dict that is off by a few percent; the study gets the latency predictor's ``predictor_tracking``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from _front_data import make_fake_run

PREDICTION_ERROR = (-0.06, 0.04, 0.12, -0.02, 0.08)  # cycled over the trials
REFIT_EVERY = 5


def make_measured_run(run_dir: Path, n: int = 16) -> Path:
    """A run folder with ``n`` measured trials and one failed trial."""
    make_fake_run(run_dir, n=n, n_failed=1, measure_front=False)
    study = optuna.load_study(study_name="hwnas", storage=f"sqlite:///{run_dir / 'study.db'}")
    extra: dict[str, dict[str, Any]] = {}
    tracking = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        _acc, lat, mem = t.values
        err = PREDICTION_ERROR[t.number % len(PREDICTION_ERROR)]
        predicted = {"latency_ms": lat * (1 + err), "energy_mj": lat * 3, "memory_mb": mem}
        extra[str(t.number)] = {
            "cost_source": "measured",
            "predicted": predicted,
            "measured": {"latency_ms": lat, "memory_mb": mem, "energy_source": "estimated"},
        }
        tracking.append(
            {
                "number": t.number,
                "predicted_ms": predicted["latency_ms"],
                "measured_ms": lat,
                "raw_ms": lat * (1 + 2 * err),
                "error_pct": err * 100,
            }
        )
    refits = [{"after": k} for k in range(REFIT_EVERY, n + 1, REFIT_EVERY)]
    study.set_user_attr("trial_user_attrs", extra)
    study.set_user_attr("predictor_tracking", {"trials": tracking, "refits": refits})
    return run_dir
