"""Device runtimes besides onnxruntime, each behind one interface (:class:`Runtime`).

Each backend converts hwnas's ONNX graphs (fp32 or QDQ int8) to its runtime's own files,
loads them with a fixed thread count and hands back a :class:`Prepared` whose ``run()``
the timing loop times. Importing this package imports no runtime: backends import theirs
when used, and :meth:`Runtime.available` says which are installed here.
"""

from __future__ import annotations

from . import _mnn, _ncnn, _onnxruntime, _openvino, _tvm  # noqa: F401  (register)
from ._base import (
    RUNTIMES,
    ConversionError,
    Prepared,
    Runtime,
    RuntimeNotInstalledError,
    get_runtime,
    runtime_names,
)
from ._verify import verify

__all__ = [
    "RUNTIMES",
    "ConversionError",
    "Prepared",
    "Runtime",
    "RuntimeNotInstalledError",
    "get_runtime",
    "runtime_names",
    "verify",
]
