"""The compression config: plain, frozen, hashable data that round-trips through JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from search_spaces._errors import InvalidConfigError

CONFIG_VERSION = 1
_TYPE = "CompressionConfig"
_KEYS = ("widths", "ranks", "bits", "dropped_blocks")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True)
class CompressionConfig:
    """One point of a :class:`~search_spaces.CompressionSpace`.

    Keys a space does not list are rejected by ``space.validate``; keys a config leaves out take
    the base model's value (full width, no factorization, 32 bits, block kept), so
    ``CompressionConfig()`` is the identity of every space.

    Attributes:
        widths: channel group name -> kept channels.
        ranks: layer path -> rank of its factorization, ``None`` for none.
        bits: layer path -> 32 (fp32), 8 (static int8) or 4 (weight-only int4).
        dropped_blocks: paths of the residual blocks replaced by identity.
    """

    widths: Mapping[str, int] = field(default_factory=dict)
    ranks: Mapping[str, int | None] = field(default_factory=dict)
    bits: Mapping[str, int] = field(default_factory=dict)
    dropped_blocks: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("widths", "ranks", "bits"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise TypeError(f"CompressionConfig.{name} must be a mapping, got {value!r}")
            object.__setattr__(self, name, _frozen(value))
        if isinstance(self.dropped_blocks, str):
            raise TypeError(
                "CompressionConfig.dropped_blocks must be a set of block paths, got the string "
                f"{self.dropped_blocks!r}; wrap it: frozenset({{{self.dropped_blocks!r}}})"
            )
        object.__setattr__(self, "dropped_blocks", frozenset(self.dropped_blocks))

    def __hash__(self) -> int:
        return hash(
            (
                tuple(self.widths.items()),
                tuple(self.ranks.items()),
                tuple(self.bits.items()),
                self.dropped_blocks,
            )
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompressionConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with ``_type`` and ``version`` keys."""
        return {
            "_type": _TYPE,
            "version": CONFIG_VERSION,
            "widths": dict(self.widths),
            "ranks": dict(self.ranks),
            "bits": dict(self.bits),
            "dropped_blocks": sorted(self.dropped_blocks),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionConfig:
        """Rebuild a config written by :meth:`to_dict`.

        Raises:
            InvalidConfigError: wrong ``_type``, unknown ``version`` or unknown keys.
        """
        if data.get("_type", _TYPE) != _TYPE:
            raise InvalidConfigError(f"_type must be {_TYPE!r}, got {data.get('_type')!r}")
        if data.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise InvalidConfigError(
                f"CompressionConfig version {data.get('version')!r} is not supported; this "
                f"hwnas reads version {CONFIG_VERSION}. Re-create the config with this version."
            )
        unknown = sorted(set(data) - {*_KEYS, "_type", "version"})
        if unknown:
            raise InvalidConfigError(
                f"unknown CompressionConfig keys {unknown}; valid keys: {list(_KEYS)}"
            )
        return cls(
            widths={k: int(v) for k, v in data.get("widths", {}).items()},
            ranks={k: None if v is None else int(v) for k, v in data.get("ranks", {}).items()},
            bits={k: int(v) for k, v in data.get("bits", {}).items()},
            dropped_blocks=frozenset(data.get("dropped_blocks", ())),
        )
