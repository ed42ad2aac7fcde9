"""Top-1 accuracy of an ONNX graph, run by onnxruntime (no torch needed).

This is how an int8 (QDQ) candidate is judged: by the graph that will actually run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

_logger = logging.getLogger(__name__)

__all__ = ["evaluate_onnx", "onnx_logits"]


def _session(path: str | PathLike[str] | bytes, threads: int, providers: Sequence[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=list(providers))


def onnx_logits(
    path: str | PathLike[str] | bytes,
    X: Any,
    *,
    batch_size: int = 256,
    threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Run the graph at ``path`` (or serialized bytes) on ``X``; return its first output.

    Args:
        path: ONNX file or its bytes. Its one input takes X's layout; a graph exported with
            a fixed batch dimension is fed batches of exactly that size.
        X: Inputs, array-like (a torch tensor works) of shape (N, ...); cast to float32.
        batch_size: Rows per run when the batch dimension is dynamic.
        threads: onnxruntime intra-op threads.
        providers: onnxruntime execution providers.

    Returns:
        Float32 array (N, num_outputs).
    """
    session = _session(path, threads, providers)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(
            f"evaluate_onnx needs a graph with one input, got {[i.name for i in inputs]}."
        )
    name = inputs[0].name
    fixed = inputs[0].shape[0] if inputs[0].shape else None
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    data = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    if data.ndim < 1 or len(data) == 0:
        raise ValueError(f"X must have at least one row, got shape {data.shape}.")
    outputs = []
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        if len(chunk) < step and isinstance(fixed, int) and fixed > 0:
            pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
            out = session.run(None, {name: np.concatenate([chunk, pad])})[0][: len(chunk)]
        else:
            out = session.run(None, {name: chunk})[0]
        outputs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outputs).reshape(len(data), -1)


def evaluate_onnx(
    path: str | PathLike[str] | bytes,
    X: Any,
    y: Any,
    *,
    batch_size: int = 256,
    threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> float:
    """Top-1 accuracy, in percent (0..100), of the ONNX graph at ``path`` on ``(X, y)``.

    Args:
        path: ONNX file or its bytes (fixed or dynamic batch dimension).
        X: Inputs (N, ...), array-like; a torch tensor works.
        y: Integer labels (N,), array-like.
        batch_size: Rows per run when the batch dimension is dynamic.
        threads: onnxruntime intra-op threads.
        providers: onnxruntime execution providers.
    """
    labels = np.asarray(y).reshape(-1)
    logits = onnx_logits(path, X, batch_size=batch_size, threads=threads, providers=providers)
    if len(labels) != len(logits):
        raise ValueError(f"X has {len(logits)} rows but y has {len(labels)}; they must match.")
    return float((logits.argmax(axis=1) == labels).mean()) * 100.0
