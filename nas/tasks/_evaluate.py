"""A task's score of a model, in torch or as an ONNX graph in onnxruntime.

The score is what the search's ``accuracy`` objective holds, always higher-is-better: the
task's metric itself, or its negation for a lower-is-better metric, named ``neg_<metric>``
(scikit-learn's scorer convention). So an MSE is minimised while every part of the search
that maximises ``accuracy`` stays right.

An ONNX graph is judged by streaming the same validation data through onnxruntime: a
callable metric receives :class:`OnnxModule`, which runs like a model.
"""

from __future__ import annotations

import math
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from nas._errors import TaskError
from nas.tasks._loaders import batches, is_pair, loader_of

if TYPE_CHECKING:
    from nas.tasks._task import Task

__all__ = [
    "OnnxModule",
    "metric_info",
    "task_score",
    "task_score_onnx",
    "val_loader",
    "verify_onnx",
]

VAL_BATCH_SIZE = 256
"""Items per batch when the task's validation data is a Dataset or a tensor pair."""


def val_loader(task: Task) -> Any:
    """The task's validation data as ``(inputs, targets)`` batches, in a fixed order."""
    return loader_of(task.val, batch_size=VAL_BATCH_SIZE)


def metric_info(task: Task) -> dict[str, Any]:
    """How the task's score is named and read (the study attribute ``metric``)."""
    return {
        "name": task.score_name,
        "metric": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "unit": "%" if task.metric == "top1" else "",
    }


def task_score(model: nn.Module, task: Task) -> float:
    """The task's score of ``model`` on its validation data (eval mode, restored after).

    Raises:
        TaskError: the task's metric returned NaN or something other than a number.
    """
    if task.metric == "top1" and is_pair(task.val):
        from nas.tasks._train import evaluate

        return float(evaluate(model, *task.val))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _score(model, task)
    finally:
        model.train(was_training)


def task_score_onnx(path: str | PathLike[str] | bytes, task: Task) -> float:
    """The task's score of the ONNX graph at ``path``, run by onnxruntime on one thread."""
    if task.metric == "top1" and is_pair(task.val):
        from nas.tasks._onnx_eval import evaluate_onnx

        return float(evaluate_onnx(path, *task.val))
    with torch.no_grad():
        return _score(OnnxModule(path), task)


def _score(model: Any, task: Task) -> float:
    loader = val_loader(task)
    if task.metric == "top1":
        return _top1(model, loader)
    call = f"metric {task.metric_name}(model, val loader) of task {task.name!r}"
    try:
        value = task.metric(model, loader)  # type: ignore[operator]
    except Exception as exc:
        raise TaskError(f"{call} raised {type(exc).__name__}: {exc}") from exc
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a 0-d tensor or numpy scalar
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(f"{call} returned {type(value).__name__} {value!r}; it must return a "
                        "float.")  # fmt: skip
    if not math.isfinite(value):
        raise TaskError(f"{call} returned {value!r}; it must return a finite number.")
    return float(value) if task.higher_is_better else -float(value)


def _top1(model: Any, loader: Any) -> float:
    correct = total = 0
    for inputs, targets in batches(loader):
        predicted = model(inputs).argmax(dim=1)
        correct += int((predicted == targets.reshape(-1)).sum())
        total += len(targets)
    if total == 0:
        raise TaskError("cannot score top1 on an empty validation set.")
    return 100.0 * correct / total


class OnnxModule(nn.Module):
    """An ONNX graph run by onnxruntime, called like a torch model: ``out = module(x)``.

    A graph exported with a fixed batch dimension is fed batches of exactly that size (the
    last one padded); outputs come back as float32 tensors of the graph's first output.
    """

    def __init__(self, path: str | PathLike[str] | bytes, *, threads: int = 1) -> None:
        super().__init__()
        from nas.tasks._onnx_eval import _session

        self.session = _session(path, threads, ("CPUExecutionProvider",))
        first = self.session.get_inputs()[0]
        fixed = first.shape[0] if first.shape else None
        self.name = first.name
        self.fixed = fixed if isinstance(fixed, int) and fixed > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        step = self.fixed or len(data)
        outputs = []
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            if self.fixed and len(chunk) < step:
                pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
                out = self.session.run(None, {self.name: np.concatenate([chunk, pad])})[0]
                out = out[: len(chunk)]
            else:
                out = self.session.run(None, {self.name: chunk})[0]
            outputs.append(np.asarray(out, dtype=np.float32))
        return torch.from_numpy(np.concatenate(outputs))


FP32_REL_TOL = 1e-3
"""Most relative RMS difference between an fp32 ONNX graph's outputs and the torch model's."""
INT8_REL_TOL = 0.1
"""Most relative RMS difference for an int8 graph (its kernels round; the torch model not)."""


def verify_onnx(
    model: nn.Module, path: str | PathLike[str], task: Task, *, quantized: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare an ONNX graph's outputs with ``model``'s on the task's validation data.

    Streams the validation batches through both; the check is the relative RMS difference
    of the outputs (:data:`FP32_REL_TOL`, or :data:`INT8_REL_TOL` for an int8 graph), as a
    task metric need not be a classification.

    Returns:
        ``(verification, accuracy)``: the report's two entries; ``accuracy`` holds the
        task's metric (its own sign) of the graph (``onnx``) and of the model (``torch``).

    Raises:
        ValueError: the outputs differ by more than the tolerance (the message says how much).
    """
    graph = OnnxModule(path)
    sq_diff = sq_ref = max_diff = 0.0
    n = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs, _ in batches(val_loader(task)):
                t_out, o_out = model(inputs).float(), graph(inputs)
                diff = (t_out - o_out).reshape(-1)
                sq_diff += float((diff**2).sum())
                sq_ref += float((t_out**2).sum())
                max_diff = max(max_diff, float(diff.abs().max()))
                n += len(inputs)
    finally:
        model.train(was_training)
    rel = math.sqrt(sq_diff / max(sq_ref, 1e-30))
    tol = INT8_REL_TOL if quantized else FP32_REL_TOL
    verification: dict[str, Any] = {
        "n_samples": n,
        "relative_rms_diff": rel,
        "max_abs_diff": max_diff,
        "mode": "int8" if quantized else "fp32",
        "required": f"relative RMS output difference <= {tol:g} (ONNX graph vs torch model)",
        "passed": bool(rel <= tol),
    }
    if rel > tol:
        raise ValueError(
            f"the ONNX model's outputs differ from the torch model's by a relative RMS of "
            f"{rel:.3g} on {n} validation samples ({verification['required']}; max |diff| "
            f"{max_diff:.3g})"
        )
    sign = 1.0 if task.higher_is_better else -1.0
    accuracy = {
        "metric": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "onnx": sign * task_score_onnx(path, task),
        "torch": sign * task_score(model, task),
    }
    return verification, accuracy
