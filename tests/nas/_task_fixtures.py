"""Shared helpers for the task/training tests: one cached home for the bundled digits tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def bundled_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HWNAS_HOME shared by all task tests of one pytest run (bundled digits train once).

    Use from a module-scoped fixture: ``yield from bundled_home(tmp_path_factory)``.
    """
    home = tmp_path_factory.getbasetemp() / "hwnas-home-bundled"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_HOME", str(home))
        yield home
