"""One real tiny search run, made once per pytest session and shared by the report tests.

digits-resnet (8x8 digits, trained once per session in the shared bundled home), a device
of its own ("report-cpu", profiled by the search in a few seconds), 6 trials with short
recovery (the warm start makes trial 0 an fp32 config), and a loose budget so that the
front is not empty and gets verified on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _task_fixtures import bundled_home

DEVICE = "report-cpu"
_CACHE: dict[str, Path] = {}


def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Yield (run folder, HWNAS_HOME) with HWNAS_HOME set; use from a module fixture."""
    for home in bundled_home(tmp_path_factory):
        if "run" not in _CACHE:
            _CACHE["run"] = _make(tmp_path_factory.getbasetemp() / "report-runs" / "tiny")
        yield _CACHE["run"], home


def _make(run_dir: Path) -> Path:
    import nas
    from latency_models import DeviceSpec, add_device

    add_device(DeviceSpec(name=DEVICE, threads=1, description="report tests"), replace=True)
    nas.search(
        "digits-resnet",
        device=DEVICE,
        objectives=("accuracy", "latency_ms", "memory_mb"),
        budget={"accuracy_drop": 60},
        n_trials=6,
        recovery_steps=30,
        run_dir=run_dir,
        warm_start=True,
        seed=0,
        profile_minutes=0.2,
    )
    return run_dir
