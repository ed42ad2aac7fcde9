"""One real tiny search run, made once per pytest session and shared by the report tests.

digits-resnet (8x8 digits, trains in seconds), local-cpu with a predictor fitted from a
short kernel sweep, 6 trials with short recovery, a loose budget so that the front is not
empty and gets verified on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_CACHE: dict[str, Path] = {}


def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Yield (run folder, HWNAS_HOME) with HWNAS_HOME set; use from a module fixture."""
    base = tmp_path_factory.getbasetemp()
    home = base / "hwnas-home-report"
    run_dir = base / "report-runs" / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_HOME", str(home))
        if "run" not in _CACHE:
            _CACHE["run"] = _make(home, run_dir)
        yield _CACHE["run"], home


def _make(home: Path, run_dir: Path) -> Path:
    import nas
    from nas._profile import profile_device

    assert os.environ["HWNAS_HOME"] == str(home)
    profile_device("local-cpu", budget_minutes=0.2, max_seconds_per_graph=0.02)
    nas.search(
        "digits-resnet",
        device="local-cpu",
        objectives=("accuracy", "latency_ms", "memory_mb"),
        budget={"accuracy_drop": 60},
        n_trials=6,
        recovery_steps=30,
        run_dir=run_dir,
        warm_start=True,
        seed=0,
    )
    return run_dir
