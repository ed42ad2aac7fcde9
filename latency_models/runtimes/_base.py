"""The interface every device runtime implements, its errors and its registry.

A runtime takes the ONNX bytes hwnas exports (fp32 or QDQ int8, static shapes), converts
them to its own files, loads them with a fixed thread count and hands back a
:class:`Prepared` whose ``run()`` the timing loop times. Standard library and numpy only:
each backend imports its runtime inside its methods, so this package imports where no
runtime is installed.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

InputSpec = tuple[str, Any, tuple[int | None, ...]]
"""``(name, numpy dtype, dims)`` of one graph input; ``None`` marks a dynamic dimension."""

_INT8_TYPES = frozenset({"i8", "u8", "int8", "uint8"})


class RuntimeNotInstalledError(ImportError):
    """The runtime's Python package (or its converter) is not importable here."""


class ConversionError(ValueError):
    """The runtime's converter refused the graph; the message carries the converter's own."""


@dataclass
class Prepared:
    """A graph loaded in a runtime, ready to time.

    Attributes:
        run: One inference on ``inputs``, as fast as the runtime allows (the timed call).
        infer: Inference on given inputs keyed by the ONNX input names; returns the outputs
            in the ONNX output order.
        inputs: The fixed inputs ``run`` uses (random with the seed; the first dynamic
            dimension is the batch size, other dynamic ones 1).
        notes: What the caller should know about this measurement (dims set, fallbacks).
        kernels: What the runtime says it executes (one dict per kernel), or None where it
            does not tell.
        precision: ``"int8"`` where int8 kernels run, else ``"fp32"`` (``"unknown"`` where
            the runtime cannot tell).
    """

    run: Callable[[], object]
    infer: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    inputs: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    kernels: list[dict[str, Any]] | None = None
    precision: str = "fp32"
    _close: Callable[[], None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release the runtime's objects and temporary files (idempotent)."""
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self) -> Prepared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runtime(abc.ABC):
    """A device runtime behind hwnas's one interface.

    Call order: :meth:`available` (cheap, never raises), then :meth:`prepare` once per
    graph and setting, then ``Prepared.run`` as often as the timing loop likes, then
    ``Prepared.close``. :meth:`convert` writes the runtime's files for export. A
    :class:`Prepared` belongs to one thread at a time. Where a runtime keeps process-wide
    state (TVM's thread pool), its module docstring says so.

    Subclasses set the class attributes and implement :meth:`version`, :meth:`convert` and
    :meth:`prepare`; ``modules`` lists what must import for the runtime to work.
    """

    name: str = ""
    extra: str = ""
    int8: bool = False
    description: str = ""
    modules: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether the runtime (and its converter) import here."""
        try:
            self._require()
        except RuntimeNotInstalledError:
            return False
        return True

    def _require(self) -> None:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise self._not_installed() from exc

    def _not_installed(self) -> RuntimeNotInstalledError:
        return RuntimeNotInstalledError(
            f'runtime {self.name!r} is not installed here: pip install "hwnas[{self.extra}]"'
        )

    @abc.abstractmethod
    def version(self) -> str:
        """``<runtime> <version>``."""

    @abc.abstractmethod
    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Write the runtime's files for ``model`` into ``out_dir``.

        Returns:
            The paths written.

        Raises:
            ConversionError: the converter refused the graph.
            RuntimeNotInstalledError: the runtime or its converter is missing.
        """

    @abc.abstractmethod
    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Convert (into a temporary folder if needed), load and compile with ``threads``.

        Raises:
            ConversionError: the converter refused the graph.
            RuntimeNotInstalledError: the runtime or its converter is missing.
            ValueError: ``threads`` or ``batch_size`` below 1, or a thread count the
                runtime cannot honour.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


RUNTIMES: dict[str, Runtime] = {}
"""Every built-in runtime by name, installed here or not (see ``Runtime.available``)."""


def register(runtime: Runtime) -> Runtime:
    """Add ``runtime`` to :data:`RUNTIMES`; a taken name raises ValueError."""
    if runtime.name in RUNTIMES:
        raise ValueError(f"runtime {runtime.name!r} is already registered.")
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_names() -> list[str]:
    """Names of all built-in runtimes, sorted."""
    return sorted(RUNTIMES)


def get_runtime(name: str | Runtime) -> Runtime:
    """The runtime registered as ``name`` (a Runtime passes through).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Runtime):
        return name
    if name not in RUNTIMES:
        close = difflib.get_close_matches(str(name), RUNTIMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown runtime {name!r}; known: {runtime_names()}.{hint}")
    return RUNTIMES[name]


def check_settings(threads: int, batch_size: int) -> None:
    """Raise ValueError unless both are integers >= 1."""
    if not (int(threads) == threads >= 1 and int(batch_size) == batch_size >= 1):
        raise ValueError(
            f"threads and batch_size must be integers >= 1, got threads={threads}, "
            f"batch_size={batch_size}."
        )


def random_inputs(
    specs: Sequence[InputSpec], batch_size: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Random inputs of the given shapes, drawn as onnxruntime's timing loop draws them.

    A dynamic first dimension is ``batch_size``, other dynamic ones 1 (with a note). Floats
    are standard normal, integers in [0, 10), booleans 0/1.

    Returns:
        The feeds and the notes.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name, dtype, dims in specs:
        shape = []
        for axis, dim in enumerate(dims):
            if dim is not None and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(batch_size)
            else:
                shape.append(1)
                notes.append(f"input {name!r} axis {axis} is dynamic; set to 1")
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds, notes


def is_int8(precision: str) -> bool:
    """Whether a runtime's precision label (``u8``, ``I8``, ``DT_INT8``...) is 8-bit integer."""
    label = precision.strip().lower().removeprefix("dt_")
    return label in _INT8_TYPES


def run_tool(argv: Sequence[str], *, cwd: Path, what: str, timeout_s: float = 600.0) -> str:
    """Run a converter in a child process (converters abort on bad graphs); return its log.

    Raises:
        ConversionError: non-zero exit, with the last lines of the tool's output.
    """
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{what} did not finish in {timeout_s:.0f} s.") from exc
    if proc.returncode != 0:
        raise ConversionError(f"{what} failed (exit {proc.returncode}): {tail(proc.stdout)}")
    return proc.stdout


def tail(log: str, lines: int = 6, keep: Callable[[str], bool] | None = None) -> str:
    """The last ``lines`` non-empty lines of ``log`` (those ``keep`` accepts), joined."""
    picked = [ln.strip() for ln in log.splitlines() if ln.strip() and (keep is None or keep(ln))]
    return " | ".join(picked[-lines:]) or "(no output)"
