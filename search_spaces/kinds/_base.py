"""Compression kinds as plug-ins: the handler base class and the registry of kinds.

A kind (channel width, block removal, low-rank, bit-width, or one a user adds) owns one key of
:class:`~search_spaces.CompressionConfig` and everything done with its value: the decision
points it offers on a traced model, sampling them from an optuna trial, validation, the
transform applied to the model, an optional rewrite of the exported ONNX graph and its part of
the one-line summary. A new kind is one module: subclass :class:`CompressionKind` and decorate
the class with :func:`register_kind`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from search_spaces._errors import InvalidConfigError, UnknownKindError

if TYPE_CHECKING:
    from pathlib import Path

    import optuna
    import torch
    from torch import nn

    from search_spaces._apply import Importance
    from search_spaces._trace import TraceResult

_K = TypeVar("_K", bound="CompressionKind")


@dataclass(frozen=True)
class SpaceContext:
    """What a kind sees of the model when a space is built.

    Attributes:
        trace: the traced graph (channel spaces, layers, removable blocks, MACs).
        model: the base model; read it, never change it.
        align: channel and rank step the device likes.
        bits: bit-widths the device runs.
    """

    trace: TraceResult
    model: nn.Module
    align: int
    bits: tuple[int, ...]


@dataclass(frozen=True)
class ApplyContext:
    """What a kind's :meth:`~CompressionKind.apply` may read besides the model it changes.

    Attributes:
        base: the base model (scores such as channel importance are read from it).
        importance: the channel score the space was asked to use.
    """

    base: nn.Module
    importance: Importance


@dataclass(frozen=True)
class ExportContext:
    """What a kind's :meth:`~CompressionKind.export` hook works with.

    Attributes:
        model: the applied model the graph was exported from.
        example_input: the batch the graph was exported with (its input shape).
        calibration: calibration inputs given to ``export_onnx``, or ``None``.
        workdir: an empty folder of this kind's own for intermediate and output files.
    """

    model: nn.Module
    example_input: torch.Tensor
    calibration: torch.Tensor | Iterable[torch.Tensor] | None
    workdir: Path


class CompressionKind:
    """Base class of a compression kind, bound to one traced model.

    Class attributes name the kind; class methods handle its config value without a space;
    instances are built by :class:`~search_spaces.CompressionSpace` (one per kind and space)
    and hold the decision points offered on that model.

    By default a kind's value is a mapping ``decision point -> choice``; a point left out
    takes the base model's choice, so the empty value changes nothing. Subclasses define
    :meth:`offer` and :meth:`apply`, and override the rest where their value differs.

    Call order: ``offer`` once when the space is built; ``sample`` or ``validate`` per config;
    ``apply`` on a copy of the base model, kinds in ascending ``order``; after the model is
    exported to ONNX, ``export`` in the same order, each on the graph the previous one wrote.

    Attributes:
        name: registry name and parameter prefix (``"width"`` gives ``"width.<point>"``).
            Parameter names must not change once studies exist: they are how a stored trial
            is rebuilt.
        key: the :class:`~search_spaces.CompressionConfig` key holding the kind's value.
        order: kinds sample, apply and export in ascending order.
        label: what a decision point is, for ``describe`` and ``repr`` (``"quantizable"``).
        summary_order: where the kind's part goes in the summary line; ``order`` when None.
        builtin: a field of ``CompressionConfig`` itself, not an entry of its ``extra``; set
            by the four built-in kinds only.
        may_run_slower: the kind's smallest value can run slower than the base model's on
            some devices (int8's quantize/dequantize around small layers, two factor layers in
            place of one), so the fastest config is looked for with it at either end.
        choices: decision point -> offered values; :meth:`base_choice` names the base
            model's (the first, unless a kind says otherwise).
        frozen: ``(what, reason)`` pairs this kind could not offer.
    """

    name: ClassVar[str]
    key: ClassVar[str]
    order: ClassVar[int]
    label: ClassVar[str] = ""
    summary_order: ClassVar[int | None] = None
    builtin: ClassVar[bool] = False
    may_run_slower: ClassVar[bool] = False

    def __init__(self, space: SpaceContext) -> None:
        self.frozen: list[tuple[str, str]] = []
        self.choices: dict[str, tuple[Any, ...]] = dict(self.offer(space))

    # -- the value in a config; no space needed ---------------------------------------------

    @classmethod
    def empty(cls) -> Any:
        """The value that changes nothing (what a config without this key holds)."""
        return MappingProxyType({})

    @classmethod
    def freeze(cls, value: Any) -> Any:
        """A read-only, hashable-by-items copy of ``value``; called on every config built.

        Raises:
            TypeError: ``value`` has the wrong type.
        """
        if not isinstance(value, Mapping):
            raise TypeError(f"CompressionConfig.{cls.key} must be a mapping, got {value!r}")
        return MappingProxyType(dict(sorted(value.items())))

    @classmethod
    def to_json(cls, value: Any) -> Any:
        """The JSON-able form of a frozen value."""
        return dict(value)

    @classmethod
    def from_json(cls, data: Any) -> Any:
        """The value :meth:`to_json` wrote."""
        return cls.freeze(data)

    @classmethod
    def export(cls, value: Any, graph: Path, ctx: ExportContext) -> Path | None:
        """Rewrite the exported ONNX ``graph``; return the new file, or None to keep ``graph``.

        The default does nothing: most kinds change the torch model, and the exporter carries
        the change into the graph.
        """
        return None

    # -- the decision points of one model ----------------------------------------------------

    def offer(self, space: SpaceContext) -> Mapping[str, tuple[Any, ...]]:
        """Decision point -> offered values (by default the base model's value first).

        Only points with a real choice (two values or more).
        """
        raise NotImplementedError(f"{type(self).__name__} must define offer()")

    def apply(self, model: nn.Module, value: Any, ctx: ApplyContext) -> nn.Module:
        """Change ``model`` (a copy the space owns) to ``value``; return it or its replacement.

        ``value`` passed :meth:`validate`. Points inside modules an earlier kind removed are
        gone from ``model``; skip them.
        """
        raise NotImplementedError(f"{type(self).__name__} must define apply()")

    def param(self, point: str) -> str:
        """The optuna parameter name of a decision point."""
        return f"{self.name}.{point}"

    def param_names(self) -> list[str]:
        """Names :meth:`sample` suggests, in order."""
        return [self.param(p) for p in self.choices]

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> Any:
        """Draw a value through ``trial.suggest_*`` only."""
        return {
            p: trial.suggest_categorical(self.param(p), list(c)) for p, c in self.choices.items()
        }

    def params_of(self, value: Any) -> dict[str, Any]:
        """The trial params that make :meth:`sample` return ``value``."""
        return {self.param(p): value.get(p, self.base_choice(p)) for p in self.choices}

    def base_choice(self, point: str) -> Any:
        """The base model's value at ``point``."""
        return self.choices[point][0]

    def identity(self) -> Any:
        """The value that reproduces the base model, every point named."""
        return {p: self.base_choice(p) for p in self.choices}

    def smallest(self) -> Any:
        """The cheapest value; the identity for kinds that do not trade size."""
        return self.identity()

    def validate(self, value: Any) -> None:
        """Check every point and choice of ``value``.

        Raises:
            InvalidConfigError: naming the point, the value and the allowed choices.
        """
        check_choices(self.key, value, self.choices, self.hint)

    def hint(self, point: str) -> str:
        """The allowed values at ``point``, for error messages."""
        return f"{list(self.choices[point])}"

    def size(self) -> int:
        """Number of distinct values."""
        count = 1
        for c in self.choices.values():
            count *= len(c)
        return count

    def summary(self, value: Any) -> list[str]:
        """Parts of the one-line summary (``"2/5 activation changed"``)."""
        changed = sum(
            value.get(p, self.base_choice(p)) != self.base_choice(p) for p in self.choices
        )
        return [f"{changed}/{len(self.choices)} {self.label or self.name} changed"]

    def describe(self) -> list[str]:
        """The kind's lines in :meth:`~search_spaces.CompressionSpace.describe`."""
        rows = [(p, format_choices(c)) for p, c in self.choices.items()]
        return table((f"{self.label or self.name} point", "choices"), rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.choices)} {self.label or self.name})"


# -- the registry ----------------------------------------------------------------------------

_KINDS: dict[str, type[CompressionKind]] = {}


def register_kind(cls: type[_K]) -> type[_K]:
    """Register a kind (usable as a class decorator); spaces built afterwards offer it.

    Raises:
        ValueError: its name or config key is taken, or it lacks ``name``, ``key`` or ``order``.
    """
    missing = [a for a in ("name", "key", "order") if not hasattr(cls, a)]
    if missing:
        raise ValueError(f"{cls.__name__} must set the class attributes {missing}")
    if cls.name in _KINDS:
        raise ValueError(
            f"a compression kind named {cls.name!r} is already registered "
            f"({_KINDS[cls.name].__name__}); pick another name or unregister_kind() it first"
        )
    taken = {k.key: k.name for k in _KINDS.values()}
    if cls.key in taken or cls.key in ("_type", "version"):
        raise ValueError(
            f"config key {cls.key!r} of {cls.__name__} is taken"
            + (f" by kind {taken[cls.key]!r}" if cls.key in taken else "")
        )
    _KINDS[cls.name] = cls
    return cls


def unregister_kind(name: str) -> type[CompressionKind]:
    """Remove a registered kind and return it; built-in kinds cannot be removed.

    Raises:
        UnknownKindError: no kind has that name.
        ValueError: the kind is built in.
    """
    cls = get_kind(name)
    if cls.builtin:
        raise ValueError(f"{name!r} is a built-in compression kind and cannot be unregistered")
    return _KINDS.pop(name)


def get_kind(name: str) -> type[CompressionKind]:
    """The kind registered under ``name``.

    Raises:
        UnknownKindError: naming the registered kinds and the closest one.
    """
    if name not in _KINDS:
        raise UnknownKindError(
            f"unknown compression kind {name!r}; registered: {kind_names()}."
            + closest(name, _KINDS)
        )
    return _KINDS[name]


def kind_names() -> list[str]:
    """Names of the registered kinds, sorted."""
    return sorted(_KINDS)


def registered_kinds() -> list[type[CompressionKind]]:
    """The registered kinds in the order they sample, apply and export."""
    return sorted(_KINDS.values(), key=lambda k: (k.order, k.name))


def kind_for_key(key: str) -> type[CompressionKind] | None:
    """The kind owning config ``key``, or None."""
    return next((k for k in _KINDS.values() if k.key == key), None)


# -- helpers shared by the kinds and the space -----------------------------------------------


def closest(name: str, names: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``names``, or an empty string."""
    near = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {near[0]!r}?" if near else ""


def check_choices(
    field: str, values: Mapping[str, Any], allowed: Mapping[str, Sequence[Any]], hint: Any
) -> None:
    """Raise :class:`InvalidConfigError` for a key or a value ``allowed`` does not list."""
    for key, value in values.items():
        if key not in allowed:
            raise InvalidConfigError(
                f"{field} names {key!r}, which this space does not have; valid keys: "
                f"{sorted(allowed)}." + closest(key, allowed)
            )
        # True == 1: a bool passes for an int choice unless bools are what is offered
        is_bool = isinstance(value, bool) and not any(isinstance(c, bool) for c in allowed[key])
        if value not in allowed[key] or is_bool:
            raise InvalidConfigError(
                f"{field}[{key!r}] = {value!r} is not offered; allowed: {hint(key)}."
            )


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Lines of a left-aligned text table with a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return lines + [fmt.format(*r) for r in rows]


def format_choices(values: tuple[object, ...]) -> str:
    """Choices as text, shortened past six."""
    text = ", ".join(str(v) for v in values)
    if len(values) > 6:
        text = f"{values[0]}, {values[1]}, ..., {values[-1]} ({len(values)})"
    return text
