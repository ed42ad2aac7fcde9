"""The ``nas`` logger: one handler on first use, level set by :func:`set_verbosity`.

The library never prints and never calls ``logging.basicConfig``; modules log through
``logging.getLogger(__name__)``, which propagates to the ``nas`` root logger here
(modelled on ``optuna/logging.py``).
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_handler: logging.Handler | None = None

CRITICAL = logging.CRITICAL
ERROR = logging.ERROR
WARNING = logging.WARNING
INFO = logging.INFO
DEBUG = logging.DEBUG


def _configure_root() -> logging.Logger:
    global _handler
    with _lock:
        root = logging.getLogger("nas")
        if _handler is None:
            _handler = logging.StreamHandler()
            _handler.setFormatter(
                logging.Formatter("[hwnas %(levelname)s %(asctime)s] %(message)s", "%H:%M:%S")
            )
            root.addHandler(_handler)
            root.setLevel(logging.INFO)
            root.propagate = False
        return root


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` (a ``nas.*`` module name), configuring the root once."""
    _configure_root()
    return logging.getLogger(name)


def set_verbosity(level: int) -> None:
    """Set the level of the ``nas`` logger (``nas.logging.INFO``, ``DEBUG``, ...)."""
    _configure_root().setLevel(level)


def get_verbosity() -> int:
    """The current level of the ``nas`` logger."""
    return _configure_root().getEffectiveLevel()
