"""Errors raised by :mod:`nas`."""

from __future__ import annotations

from latency_models._errors import UnknownNameError


class NASError(Exception):
    """Base class of every error raised by :mod:`nas`."""


class TaskError(NASError, ValueError):
    """A task could not be loaded or did not return a :class:`nas.Task`."""


class BudgetError(NASError, ValueError):
    """A budget or objective is malformed, already met, or cannot be met."""


class RunError(NASError, RuntimeError):
    """A run folder is missing, belongs to another task or device, or holds no usable trial."""


class UsageError(NASError, ValueError):
    """A command-line argument is wrong; the CLI prints the message and the command's help."""


__all__ = ["BudgetError", "NASError", "RunError", "TaskError", "UnknownNameError", "UsageError"]
