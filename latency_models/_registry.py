"""A small name-to-object table, the one lookup path for devices, predictors and the like.

Modelled on timm's ``_registry.py`` with two changes: a duplicate name raises instead of
warning, and an unknown name lists the registered ones and the closest match.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from latency_models._errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Registered objects by kebab-case name.

    Args:
        kind: What the entries are, used in error messages ("device", "task").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Register ``obj`` under ``name``; raise if the name is taken and not ``replace``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}.")
        if name in self._entries and not replace:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered. Choose another name, "
                f"or pass replace=True to overwrite it."
            )
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def _decorator(obj: T) -> T:
            return self.add(name, obj)

        return _decorator

    def remove(self, name: str) -> None:
        """Forget ``name`` (unknown names raise :class:`UnknownNameError`)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """Return the entry named ``name``.

        Raises:
            UnknownNameError: listing the registered names and the closest one.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """The message for an unknown ``name``: the registered names and the closest."""
        names = self.names()
        msg = f"unknown {self.kind} {name!r}; registered: {names}."
        close = difflib.get_close_matches(str(name), names, n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        return msg

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style wildcard."""
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
