"""Rebuild a trial's model from its config, fine-tune it, and check its ONNX graph.

The model is rebuilt with the same ``analyze`` + ``apply`` the search ran; the ONNX graph is
verified against the torch model on the validation set (:func:`verify_graph`), measured on
the device (:func:`measure_graph`) and, for other runtimes, converted and verified there
(:func:`runtime_files`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import NASError, RunError
from nas.searching._run import Run
from nas.searching._trial import is_quantized
from nas.searching._trial_row import TrialRow

if TYPE_CHECKING:
    from torch import nn

_logger = logging.getLogger(__name__)

INT8_AGREEMENT = 0.98
"""Least share of validation samples whose int8 ONNX top-1 equals the fp32 torch top-1.

The torch module stays fp32 while the graph runs int8 kernels, so a few samples near a
decision boundary may flip (on the bundled 8x8 digits task, 2 of 360 after a 200-step
fine-tune); the accuracy written to ``report.json`` is always that of the ONNX graph."""
TIE_MARGIN = 1e-4
"""Two best logits closer than this make a tie that fp32 rounding may break either way."""


class ExportError(NASError, RuntimeError):
    """The exported model failed verification or could not be written."""


def runtime_files(onnx_path: Path, runtime: str) -> dict[str, Any] | None:
    """Write ``runtime``'s files beside ``onnx_path``, verified there; their report entry.

    None for onnxruntime (``model.onnx`` is its file).

    Raises:
        ExportError: the runtime is missing, refuses the graph, or disagrees with onnxruntime.
    """
    if runtime == "onnxruntime":
        return None
    from latency_models.runtimes import get_runtime, verify

    model = onnx_path.read_bytes()
    try:
        backend = get_runtime(runtime)
        check = verify(model, backend)
        files = backend.convert(model, onnx_path.parent, name=onnx_path.stem)
    except (ImportError, ValueError) as exc:
        raise ExportError(f"cannot export for {runtime}: {exc}") from exc
    if not check["ok"]:
        raise ExportError(
            f"{runtime} disagrees with onnxruntime on the exported graph ({check}); nothing "
            f"was written. Export for onnxruntime (--runtime onnxruntime) or another runtime."
        )
    return {
        "name": runtime,
        "version": backend.version(),
        "files": [p.name for p in files],
        "verification": check,
    }


@dataclass
class Built:
    task: Any
    device: Any
    space: Any
    config: Any
    model: nn.Module


def rebuild_and_finetune(
    results: Run, row: TrialRow, *, finetune_steps: int, seed: int, task_spec: str
) -> Built:
    from latency_models import get_device
    from nas.tasks._recovery import recover
    from nas.tasks._tasks import load_task
    from nas.tasks._train import num_threads
    from search_spaces import CompressionConfig

    device_name = results.setting("device")
    if not task_spec or not device_name:
        raise RunError(f"{results.run_dir} does not name its task and device; is it a hwnas run?")
    task = load_task(task_spec)  # checked by trusted_task_spec
    device = get_device(str(device_name))
    space = compression_space(task, align=device.align, bits=tuple(device.precisions))
    config = CompressionConfig.from_dict(row.config or {})
    space.validate(config)
    model = space.apply(task.model, config)
    # one torch thread, as in the search's trials: small models gain nothing from two, and
    # on a busy machine two threads oversubscribe the cores (10x slower, measured here)
    with num_threads(1):
        recover(
            model,
            task.model,
            task,
            steps=finetune_steps,
            seed=seed,
            batch_size=int(results.setting("recovery_batch_size", 64)),
            lr=float(results.setting("recovery_lr", 1e-3)),
        )
    return Built(task=task, device=device, space=space, config=config, model=model)


def compression_space(task: Any, *, align: int, bits: tuple[int, ...]) -> Any:
    """The compression space exactly as the search built it (``nas.searching._search.prepare``)."""
    from search_spaces import analyze

    return analyze(task.model, task.example_input, align=align, bits=bits)


def export_onnx_file(built: Built, path: Path, *, calibration: Any) -> None:
    from search_spaces import export_onnx

    exported = export_onnx(
        built.model, built.config, built.task.example_input, path, calibration=calibration
    )
    written = Path(getattr(exported, "path", path))
    if written != path:
        shutil.move(str(written), path)
    data_file = path.with_name(path.name + ".data")
    if data_file.exists():
        raise ExportError(
            f"the ONNX export wrote external weights ({data_file.name}); model.onnx must be "
            "self-contained"
        )


def verify_graph(
    built: Built, onnx_path: Path, *, int8_agreement: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare ONNX and torch top-1 on the validation set; raise ExportError on mismatch.

    A task with its own metric or streamed data compares outputs instead
    (``nas.tasks._evaluate.verify_onnx``).
    """
    import numpy as np

    from nas.tasks._loaders import is_pair
    from nas.tasks._onnx_eval import onnx_logits
    from nas.tasks._train import predict_logits

    if built.task.metric != "top1" or not is_pair(built.task.val):
        from nas.tasks._evaluate import verify_onnx

        try:
            return verify_onnx(
                built.model, onnx_path, built.task, quantized=is_quantized(built.config)
            )
        except ValueError as exc:
            raise ExportError(f"verification failed: {exc}. Nothing was written.") from exc
    X_val, y_val = built.task.val
    t_logits = predict_logits(built.model, X_val).numpy()
    o_logits = onnx_logits(onnx_path, X_val)
    y = y_val.numpy()
    t_pred, o_pred = t_logits.argmax(1), o_logits.argmax(1)
    top2 = np.sort(t_logits, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) >= TIE_MARGIN
    agree = t_pred == o_pred
    quantized = is_quantized(built.config)
    agreement = float(agree.mean())
    max_diff = float(np.abs(t_logits - o_logits).max())
    verification: dict[str, Any] = {
        "n_samples": len(y),
        "agreement": agreement,
        "disagreements": int((~agree).sum()),
        "disagreements_outside_ties": int((~agree & decided).sum()),
        "max_abs_logit_diff": max_diff,
        "mode": "int8" if quantized else "fp32",
        "required": (
            f">= {int8_agreement:.2%} top-1 agreement (int8 graph vs fp32 torch)"
            if quantized
            else f"identical top-1 on every sample (ties within {TIE_MARGIN:g} excepted)"
        ),
    }
    ok = agreement >= int8_agreement if quantized else not (~agree & decided).any()
    verification["passed"] = bool(ok)
    if not ok:
        raise ExportError(
            f"verification failed: the ONNX model's top-1 agrees with the torch model on "
            f"{agreement:.2%} of {len(y)} validation samples ({verification['required']}; "
            f"max |logit diff| {max_diff:.3g}). Nothing was written. Report this with the run "
            "folder; for int8 you may lower int8_agreement at your own risk."
        )
    accuracy = {
        "onnx_top1": float((o_pred == y).mean() * 100.0),
        "torch_top1": float((t_pred == y).mean() * 100.0),
    }
    _logger.info(
        "verified: top-1 agreement %.2f%% (%s), ONNX top-1 %.2f%%",
        100 * agreement,
        verification["mode"],
        accuracy["onnx_top1"],
    )
    return verification, accuracy


def measure_graph(onnx_path: Path, device: Any, max_seconds: float) -> dict[str, Any]:
    from latency_models import estimate_energy_mj, measure, memory_footprint

    m = measure(onnx_path, device, max_seconds=max_seconds)
    footprint = memory_footprint(onnx_path)
    energy, source = m.energy_mj, m.energy_source
    if energy is None:
        energy, source = float(estimate_energy_mj(onnx_path)), "estimated"
    return {
        "latency_ms": float(m.latency_ms),
        "p10_ms": float(m.p10_ms),
        "p90_ms": float(m.p90_ms),
        "cv": _finite(m.cv),
        "n_runs": int(m.n_runs),
        "energy_mj": float(energy),
        "energy_source": source,
        "memory_mb": footprint.total_mb,
        "memory_source": "computed: weights at their bit-widths plus peak activations",
        "weight_bytes": int(footprint.weight_bytes),
        "peak_activation_bytes": int(footprint.peak_activation_bytes),
        "peak_memory_bytes_measured": m.peak_memory_bytes,
        "runtime_version": m.runtime_version,
        "host": m.host,
        "timestamp": m.timestamp,
    }


SIDE_BY_SIDE_ROUNDS = 5
"""Interleaved rounds in which an export and the base model are measured for a relative budget."""


def measure_side_by_side(
    built: Built, onnx_path: Path, keys: Iterable[str], max_seconds: float
) -> dict[str, Any]:
    """The base model and the export measured in interleaved rounds: each one's medians.

    A relative budget (``latency_ms=0.5x``) is a share of the base model's cost. Judged by one
    measurement of the export against the limit resolved when the search started, it passes
    or fails with the machine's drift since then; measured interleaved with the base model,
    drift hits both alike. ``keys``: the costs to take (``latency_ms``, ``energy_mj``).
    """
    import statistics
    import tempfile

    from latency_models.measurement._cached import measure_interleaved
    from search_spaces import export_onnx

    with tempfile.TemporaryDirectory(prefix="hwnas-side-by-side-") as tmp:
        identity = built.space.identity()
        base_path = Path(tmp) / "base.onnx"
        export_onnx(
            built.space.apply(built.task.model, identity), identity,
            built.task.example_input, base_path,
        )  # fmt: skip
        runs = measure_interleaved(
            {"base": base_path, "export": onnx_path}, built.device,
            rounds=SIDE_BY_SIDE_ROUNDS, max_seconds=max_seconds,
        )  # fmt: skip
    out: dict[str, Any] = {"rounds": SIDE_BY_SIDE_ROUNDS}
    for name, ms in runs.items():
        values = {key: [getattr(m, key) for m in ms if getattr(m, key, None) is not None]
                  for key in keys}  # fmt: skip
        out[name] = {key: statistics.median(v) if v else None for key, v in values.items()}
    return out


def _finite(v: Any) -> float | None:
    import math

    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


__all__ = [
    "INT8_AGREEMENT",
    "TIE_MARGIN",
    "Built",
    "ExportError",
    "compression_space",
    "export_onnx_file",
    "measure_graph",
    "rebuild_and_finetune",
    "runtime_files",
    "verify_graph",
]
