"""Where hwnas keeps its cache, devices and measurements."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The hwnas home folder, created on first use.

    ``$HWNAS_HOME``, else ``$XDG_CACHE_HOME/hwnas``, else ``~/.cache/hwnas``.
    """
    env = os.environ.get("HWNAS_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(cache) / "hwnas"
    path.mkdir(parents=True, exist_ok=True)
    return path
