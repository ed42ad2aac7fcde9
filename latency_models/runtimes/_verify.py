"""Check a runtime's outputs against onnxruntime's on the same inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Runtime, get_runtime, random_inputs
from ._onnxruntime import OnnxRuntime

FP32_TOLERANCE = (1e-3, 1e-5)
"""(rtol, atol) for fp32: kernels differ in summation order, Winograd and layouts, which
moves outputs by ~1e-6 of their scale; 1e-3 still catches a wrong layout or a dropped op."""

INT8_TOLERANCE = (0.25, 1e-3)
"""(rtol, atol) where either side runs int8: runtimes round requantized activations
differently and some (MNN) calibrate their own scales, so outputs move by a few
quantization steps; agreement on the top-1 class carries the weight instead."""

INT8_MIN_TOP1 = 0.75
"""Fewest rows of (N, C) outputs whose top-1 class must agree when int8 runs."""


def verify(
    model: bytes,
    runtime: str | Runtime,
    *,
    seed: int = 0,
    n_samples: int = 4,
    rtol: float | None = None,
    atol: float | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Compare ``runtime``'s outputs with onnxruntime's on ``n_samples`` random inputs.

    The error is measured against each output's scale: ``max_rel_diff`` is the largest
    absolute difference divided by the largest absolute reference value, so near-zero
    elements do not dominate. ``ok`` needs every output within ``atol + rtol * scale``
    and, where int8 runs, top-1 agreement of at least :data:`INT8_MIN_TOP1` on (N, C)
    outputs. Defaults: :data:`FP32_TOLERANCE`, or :data:`INT8_TOLERANCE` where either
    runtime runs int8 kernels.

    Returns:
        ``runtime``, ``version``, ``precision``, ``reference_precision``, ``n_samples``,
        ``max_abs_diff``, ``max_rel_diff``, ``top1_agreement`` (None without an (N, C)
        output), ``rtol``, ``atol``, ``ok`` and ``notes``.
    """
    rt = get_runtime(runtime)
    with (
        rt.prepare(model, threads=threads, seed=seed) as got,
        OnnxRuntime().prepare(model, threads=1, seed=seed) as ref,
    ):
        int8 = "int8" in (got.precision, ref.precision)
        default_rtol, default_atol = INT8_TOLERANCE if int8 else FP32_TOLERANCE
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
        specs = [(name, arr.dtype, arr.shape) for name, arr in ref.inputs.items()]
        notes: list[str] = []
        max_abs, max_rel, within = 0.0, 0.0, True
        agree, rows = 0, 0
        for i in range(n_samples):
            feeds = random_inputs(specs, 1, seed + i)[0]
            for k, (a, b) in enumerate(zip(got.infer(feeds), ref.infer(feeds), strict=True)):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.shape != b.shape:
                    notes.append(f"output {k}: shape {a.shape}, onnxruntime {b.shape}")
                    within = False
                    continue
                diff = float(np.max(np.abs(a - b))) if a.size else 0.0
                scale = float(np.max(np.abs(b))) if b.size else 0.0
                max_abs = max(max_abs, diff)
                max_rel = max(max_rel, diff / max(scale, 1e-12))
                within = within and diff <= atol + rtol * scale
                if b.ndim == 2 and b.shape[1] > 1:
                    agree += int(np.sum(a.argmax(1) == b.argmax(1)))
                    rows += b.shape[0]
        top1 = agree / rows if rows else None
        ok = within and (not int8 or top1 is None or top1 >= INT8_MIN_TOP1)
        return {
            "runtime": rt.name,
            "version": rt.version(),
            "precision": got.precision,
            "reference_precision": ref.precision,
            "n_samples": n_samples,
            "max_abs_diff": max_abs,
            "max_rel_diff": max_rel,
            "top1_agreement": top1,
            "rtol": rtol,
            "atol": atol,
            "ok": bool(ok),
            "notes": notes,
        }
