"""Shared setup of the search tests: the bundled digits task and a profiled local-cpu."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _task_fixtures import bundled_home


def profiled_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The shared test home, with ``local-cpu`` profiled (a few seconds, once per run).

    Use from a module-scoped fixture: ``yield from profiled_home(tmp_path_factory)``.
    """
    from latency_models import PredictorNotFoundError, device_predictor

    for home in bundled_home(tmp_path_factory):
        try:
            device_predictor("local-cpu")
        except PredictorNotFoundError:
            from nas import get_task
            from nas.searching._profile import profile_device

            get_task("digits-resnet")  # train it first: profiling time is for measuring
            profile_device(
                "local-cpu", task="digits-resnet", budget_minutes=0.2, max_seconds_per_graph=0.05
            )
        yield home
