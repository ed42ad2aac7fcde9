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


class StaleFeaturesError(IncompatibleArtifactError):
    """A saved predictor was fit on another feature version: refit it from the stored graphs."""


class GraphRejectedError(MeasurementError, ValueError):
    """The graph is not valid ONNX, or onnxruntime refused to load or run it."""


class AgentError(MeasurementError):
    """A measurement agent could not measure the graph (base of the agent errors)."""


class AgentUnreachableError(AgentError, ConnectionError):
    """No agent answers at the device's URL."""


class AgentAuthError(AgentError, PermissionError):
    """The agent refused the token (HTTP 401/403), or no token is configured."""


class AgentTimeoutError(AgentError, TimeoutError):
    """The agent (or Ray task) did not answer in time."""


class AgentBusyError(AgentError):
    """The agent was measuring other graphs for longer than the client would wait."""


class ProfileError(LatencyModelsError, ValueError):
    """A device profile cannot run: a budget too small for a fit, or no measurements."""
