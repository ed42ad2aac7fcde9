"""Errors raised by :mod:`search_spaces`."""

from __future__ import annotations


class SearchSpaceError(Exception):
    """Base class of every error raised by :mod:`search_spaces`."""


class TraceError(SearchSpaceError, RuntimeError):
    """The model could not be traced at all; the message names the op and module path."""


class InvalidConfigError(SearchSpaceError, ValueError):
    """A compression config does not fit the space (unknown key, value not offered)."""


class UnknownKindError(SearchSpaceError, KeyError):
    """No compression kind is registered under that name; the message lists the registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
