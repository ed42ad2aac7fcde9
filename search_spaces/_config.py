"""The compression config: plain, frozen, hashable data that round-trips through JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from search_spaces._errors import InvalidConfigError
from search_spaces.kinds._base import (
    CompressionKind,
    closest,
    kind_for_key,
    kind_names,
    registered_kinds,
)

CONFIG_VERSION = 1
_TYPE = "CompressionConfig"
_FIELDS = ("widths", "ranks", "bits", "dropped_blocks")


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
        extra: values of registered kinds beyond the four above, by the kind's config key;
            a value that changes nothing is left out.
    """

    widths: Mapping[str, int] = field(default_factory=dict)
    ranks: Mapping[str, int | None] = field(default_factory=dict)
    bits: Mapping[str, int] = field(default_factory=dict)
    dropped_blocks: frozenset[str] = frozenset()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _FIELDS:
            object.__setattr__(self, name, _builtin(name).freeze(getattr(self, name)))
        if not isinstance(self.extra, Mapping):
            raise TypeError(f"CompressionConfig.extra must be a mapping, got {self.extra!r}")
        extra = {}
        for key, value in self.extra.items():
            kind = _extra_kind(key, "CompressionConfig.extra names")
            frozen = kind.freeze(value)
            if frozen != kind.empty():
                extra[key] = frozen
        object.__setattr__(self, "extra", MappingProxyType(dict(sorted(extra.items()))))

    def __hash__(self) -> int:
        return hash(
            (
                tuple(self.widths.items()),
                tuple(self.ranks.items()),
                tuple(self.bits.items()),
                self.dropped_blocks,
                tuple((k, _hashable(v)) for k, v in self.extra.items()),
            )
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompressionConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def value(self, key: str) -> Any:
        """The value of the kind owning config ``key`` (its empty value when left out).

        Raises:
            InvalidConfigError: no registered kind owns ``key``.
        """
        if key in _FIELDS:
            return getattr(self, key)
        if key in self.extra:
            return self.extra[key]
        return _extra_kind(key, "no value for").empty()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> CompressionConfig:
        """A config from ``kind key -> value`` for any registered kinds."""
        fields = {k: v for k, v in values.items() if k in _FIELDS}
        return cls(**fields, extra={k: v for k, v in values.items() if k not in _FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with ``_type`` and ``version`` keys; extra kinds under their keys."""
        out: dict[str, Any] = {"_type": _TYPE, "version": CONFIG_VERSION}
        for name in _FIELDS:
            out[name] = _builtin(name).to_json(getattr(self, name))
        for key, value in self.extra.items():
            out[key] = _extra_kind(key, "cannot write").to_json(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionConfig:
        """Rebuild a config written by :meth:`to_dict`.

        Raises:
            InvalidConfigError: wrong ``_type``, unknown ``version`` or keys no registered
                kind owns.
        """
        if data.get("_type", _TYPE) != _TYPE:
            raise InvalidConfigError(f"_type must be {_TYPE!r}, got {data.get('_type')!r}")
        if data.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise InvalidConfigError(
                f"CompressionConfig version {data.get('version')!r} is not supported; this "
                f"hwnas reads version {CONFIG_VERSION}. Re-create the config with this version."
            )
        keys = set(data) - {"_type", "version"}
        unknown = sorted(k for k in keys if k not in _FIELDS and _extra_or_none(k) is None)
        if unknown:
            valid = _valid_keys()
            raise InvalidConfigError(
                f"unknown CompressionConfig keys {unknown}; valid keys: {valid} (registered "
                f"compression kinds: {kind_names()})." + closest(unknown[0], valid)
            )
        fields = {k: _builtin(k).from_json(data[k]) for k in _FIELDS if k in data}
        extra = {k: _extra_kind(k).from_json(data[k]) for k in sorted(keys - set(_FIELDS))}
        return cls(**fields, extra=extra)


def _hashable(value: Any) -> Any:
    return tuple(value.items()) if isinstance(value, Mapping) else value


def _builtin(name: str) -> type[CompressionKind]:
    kind = kind_for_key(name)
    if kind is None:  # only while search_spaces.kinds is half imported
        raise RuntimeError(f"the built-in compression kind owning {name!r} is not registered")
    return kind


def _extra_or_none(key: str) -> type[CompressionKind] | None:
    kind = kind_for_key(key)
    return None if kind is None or kind.builtin else kind


def _valid_keys() -> list[str]:
    return [*_FIELDS, *(k.key for k in registered_kinds() if not k.builtin)]


def _extra_kind(key: str, what: str = "config key") -> type[CompressionKind]:
    """The registered non-built-in kind owning ``key``.

    Raises:
        InvalidConfigError: naming the key, the valid keys and the registered kinds.
    """
    kind = _extra_or_none(key)
    if kind is None:
        valid = _valid_keys()
        fix = (
            f" {key!r} is a field: pass {key}=... instead."
            if key in _FIELDS
            else " Register its kind (search_spaces.kinds.register_kind) before using it."
        )
        raise InvalidConfigError(
            f"{what} {key!r}, a key no registered compression kind owns; valid keys: {valid} "
            f"(registered compression kinds: {kind_names()})." + closest(key, valid) + fix
        )
    return kind
