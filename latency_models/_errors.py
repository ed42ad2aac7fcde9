"""Errors raised by :mod:`latency_models`.

Each error mixes in the builtin that callers would catch anyway, as optuna's
``optuna/exceptions.py`` does, so ``except KeyError`` still works for an unknown name.
"""

from __future__ import annotations


class LatencyModelsError(Exception):
    """Base class of every error raised by :mod:`latency_models`."""


class UnknownNameError(LatencyModelsError, KeyError):
    """A registry lookup named something that is not registered."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(LatencyModelsError, ValueError):
    """A registry already holds an entry of that name."""


class MeasurementError(LatencyModelsError, RuntimeError):
    """Running or timing a graph on a device failed."""


class IncompatibleArtifactError(LatencyModelsError, ValueError):
    """A saved file (predictor, store) was written by an incompatible version or device."""
