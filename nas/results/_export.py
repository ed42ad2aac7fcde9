"""Take one trial of a run home: rebuild, fine-tune, export, verify, measure, write.

:func:`export` rebuilds the trial's compressed model from its stored config (the same
``analyze`` + ``apply`` the search ran on the task's base model), fine-tunes it longer by
distillation from the base model, exports it to ONNX (int8 QDQ where the config says so,
calibrated on training images), and verifies it *before* anything is written:

- the ONNX model's top-1 predictions on the validation set agree with the torch model's:
  all of them for an fp32 config (a sample whose two best torch logits are closer than
  :data:`TIE_MARGIN` is a tie, not a decision, and is not counted), at least
  :data:`INT8_AGREEMENT` of them when layers run in int8 (the torch module stays fp32);
- the graph is measured on the run's device.

The files are written into a temporary folder next to ``out_dir`` and renamed into place in
one step, so a failed export leaves nothing half-written:

- ``model.onnx``: runs in plain onnxruntime;
- ``model.pt``: ``{"format_version", "task", "config", "space", "state_dict", ...}``, rebuilt
  into a torch module by :func:`load_exported`;
- ``report.json``: config, summary, accuracies, verification, measured and predicted
  latency/energy/memory, device, library versions and the files' SHA-256.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import NASError, RunError, TaskError, UsageError
from nas._objectives import OBJECTIVES
from nas.results._pareto import RunResults, TrialRow, read_run
from nas.searching._trial import is_quantized

if TYPE_CHECKING:
    from torch import nn

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the ``model.pt`` and ``report.json`` layouts."""
DEFAULT_FINETUNE_STEPS = 300
"""Distillation steps before export (the search's recovery uses far fewer)."""
INT8_AGREEMENT = 0.98
"""Least share of validation samples whose int8 ONNX top-1 equals the fp32 torch top-1.

The torch module stays fp32 while the graph runs int8 kernels, so a few samples near a
decision boundary may flip (on the bundled 8x8 digits task, 2 of 360 after a 200-step
fine-tune); the accuracy written to ``report.json`` is always that of the ONNX graph."""
TIE_MARGIN = 1e-4
"""Two best logits closer than this make a tie that fp32 rounding may break either way."""


class ExportError(NASError, RuntimeError):
    """The exported model failed verification or could not be written."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        out_dir: The folder holding ``model.onnx``, ``model.pt`` and ``report.json``.
        trial: The exported trial number.
        report: The content of ``report.json``.
    """

    out_dir: Path
    trial: int
    report: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal."""
        r = self.report
        acc = r.get("accuracy", {})
        meas = r.get("measured", {})
        ver = r.get("verification", {})
        return (
            f"exported trial {self.trial} ({r.get('summary', '')}) to {self.out_dir}\n"
            f"  {r.get('selection', '')}\n"
            f"  ONNX top-1 {acc.get('onnx_top1', float('nan')):.2f}% on validation "
            f"(torch {acc.get('torch_top1', float('nan')):.2f}%, base "
            f"{acc.get('base_top1', float('nan')):.2f}%); "
            f"top-1 agreement {100 * ver.get('agreement', float('nan')):.2f}%\n"
            f"  measured on {r.get('device', {}).get('name', '?')}: latency "
            f"{meas.get('latency_ms', float('nan')):.3f} ms, memory "
            f"{meas.get('memory_mb', float('nan')):.3f} MB, energy "
            f"{_fmt_optional(meas.get('energy_mj'))} mJ ({meas.get('energy_source', '?')})"
        )


def _fmt_optional(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def measured_within_budget(row: TrialRow, results: RunResults) -> bool | None:
    """Whether ``row`` meets the run's budget by measurement; None when a cost is unmeasured.

    Latency and energy limits are judged on the values measured on the device, computed
    objectives (memory) on their computed value, ``accuracy_drop`` on the search's accuracy.
    """
    if row.accuracy is None or row.rejected_before_training:
        return False
    for key, limit in results.budget.items():
        if key == "accuracy_drop":
            floor = results.accuracy_floor()
            if floor is not None and row.accuracy < floor:
                return False
            continue
        if key in OBJECTIVES and OBJECTIVES[key].source == "computed":
            value = row.predicted.get(key, row.values.get(key))
        else:
            value = row.measured.get(key)
        if value is None:
            return None
        if value > limit:
            return False
    return True


def candidates(results: RunResults) -> tuple[list[TrialRow], str]:
    """Trials to export, most accurate first, and how they were judged.

    The trials whose *measured* cost meets the budget (ties: the cheaper measured). A run
    with no measured trial (searched with ``--costs predicted``) falls back to the trials
    that meet the budget on their recorded values, and says so.
    """
    if not any(row.measured for row in results.rows):
        return [results.best_trial()], "predicted"
    cost = results.first_cost

    def order(row: TrialRow) -> tuple[float, float]:
        price = row.measured.get(cost, row.values.get(cost, 0.0)) if cost else 0.0
        return (-(row.accuracy or 0.0), price)

    within = [row for row in results.rows if measured_within_budget(row, results)]
    return sorted(within, key=order), "measured"


def _choose(results: RunResults, trial: int | None) -> tuple[TrialRow, str]:
    if trial is not None:
        row = results.trial(trial)
        return row, f"trial {row.number} as requested"
    rows, how = candidates(results)
    if not rows:
        raise RunError(
            f"no trial of run {results.run_dir} meets the budget {dict(results.budget)} by "
            f"measurement on the device; pick one yourself with --trial N (see `hwnas pareto "
            f"{results.run_dir} --all`), or run more trials"
        )
    row = rows[0]
    if how == "predicted":
        _logger.warning(
            "no trial of %s was measured on the device during the search (--costs predicted): "
            "choosing by predicted cost",
            results.run_dir,
        )
    why = (
        f"trial {row.number}: the most accurate trial whose {how} cost meets the budget "
        f"({row.accuracy:.2f}% after the search's short recovery)"
    )
    return row, why


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an existing ``out_dir`` (unless ``force``) and a place that cannot be written.

    The folder's parent is created and written to (a small synced file, removed again) now,
    so that a read-only target or a full disk is reported before the fine-tune, not after.
    """
    if out_dir.exists() and not force:
        raise UsageError(
            f"output folder {str(out_dir)!r} already exists; pass --force (force=True) to "
            "replace it, or choose another --out folder"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {str(out_dir)!r} is a file, not a folder; choose a folder name")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir.parent) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise UsageError(
            f"cannot write into {str(out_dir.parent)!r} for --out {str(out_dir)!r}: "
            f"{exc.strerror or exc}; choose a folder you may write to"
        ) from exc


def trusted_task_spec(stored: Any, *, task: str | None, trust_task: bool, source: str) -> str:
    """The task to load for a model or run from elsewhere, without running untrusted code.

    A task named ``module:function`` or ``file.py:function`` inside a folder is code: loading
    it imports and runs that module. Bundled and registered task names are safe. Anything
    else runs only when the user names the task (``task``) or trusts the folder.

    Args:
        stored: The task spec written in the folder.
        task: The task the user names (used instead of ``stored``).
        trust_task: Load ``stored`` even when it is code.
        source: What ``stored`` comes from, for the message.

    Raises:
        TaskError: ``stored`` is code and neither ``task`` nor ``trust_task`` is given.
    """
    from nas.tasks._tasks import TASKS

    if task is not None:
        return task
    spec = str(stored or "")
    if not spec or trust_task or spec.strip() in TASKS:  # "": the caller reports no task
        return spec
    raise TaskError(
        f"{source} names the task {spec!r}: code that would be imported and run to rebuild "
        "the model. Name the task yourself if you know it (CLI: --task SPEC; task=SPEC), or, "
        "only if you trust where the folder came from, pass --trust-task (trust_task=True)."
    )


def _runtime_files(onnx_path: Path, runtime: str) -> dict[str, Any] | None:
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


def export(
    run: Any,
    trial: int | None = None,
    *,
    out_dir: str | Path,
    finetune_steps: int = DEFAULT_FINETUNE_STEPS,
    force: bool = False,
    seed: int | None = None,
    int8_agreement: float = INT8_AGREEMENT,
    measure_seconds: float = 3.0,
    task: str | None = None,
    trust_task: bool = False,
    runtime: str | None = None,
) -> ExportResult:
    """Rebuild, fine-tune, verify, measure and write one trial of ``run``.

    Args:
        run: The run folder or a ``nas.Run``.
        trial: The trial number; None picks the most accurate trial that meets the budget
            (the choice is logged and written to ``report.json``).
        out_dir: The folder to create.
        finetune_steps: Distillation steps from the base model before export (0: BatchNorm
            recalibration only).
        force: Replace ``out_dir`` if it exists.
        seed: Seed of the fine-tune; default the run's seed (or 0).
        int8_agreement: Least share of validation samples on which an int8 graph must agree
            with the torch model's top-1 (0..1).
        measure_seconds: Cap on the timed loop of the on-device measurement (s).
        task: The run's task, named by the user (a bundled name, ``module:function`` or
            ``file.py:function``); default the one the run names, if it is bundled.
        trust_task: Import and run the task the run names even when it is code (a run
            folder from someone else could name any code).
        runtime: Also write the graph in this runtime's files (:mod:`latency_models.runtimes`),
            verified there against onnxruntime; default the run's device runtime
            (onnxruntime: ``model.onnx`` only).

    Returns:
        Where the files went, and the report.

    Raises:
        RunError: The run is missing or empty, the trial is not a finished trial of it, or
            no trial meets the budget (with ``trial=None``).
        TaskError: The run names a task that is code, and neither ``task`` nor
            ``trust_task`` is given (see :func:`trusted_task_spec`).
        UsageError: ``out_dir`` exists and ``force`` is False, or cannot be written.
        ExportError: Verification failed (nothing is written).
    """
    from nas.logging import get_logger

    get_logger("nas")  # the nas logger's handler, so that the choice of trial is shown
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    if finetune_steps < 0:
        raise UsageError(f"finetune_steps must be >= 0, got {finetune_steps}")
    if not 0.0 < int8_agreement <= 1.0:
        raise UsageError(f"int8_agreement must be in (0, 1], got {int8_agreement}")
    results = read_run(run)
    row, why = _choose(results, trial)
    task_spec = trusted_task_spec(
        results.settings.get("task") or results.user_attrs.get("task"),
        task=task,
        trust_task=trust_task,
        source=f"run folder {str(results.run_dir)!r}",
    )
    if row.config is None:
        raise RunError(f"trial {row.number} of {results.run_dir} stored no config; cannot rebuild")
    if row.rejected_before_training:
        _logger.warning(
            "trial %d was rejected before training (predicted far outside the budget); "
            "exporting it anyway",
            row.number,
        )
    _logger.info("exporting %s", why)
    settings = results.settings
    seed = int(settings.get("seed") or 0) if seed is None else seed
    built = _rebuild_and_finetune(
        results, row, finetune_steps=finetune_steps, seed=seed, task_spec=task_spec
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        report = _write_verified(
            built,
            tmp,
            results=results,
            row=row,
            why=why,
            finetune_steps=finetune_steps,
            seed=seed,
            int8_agreement=int8_agreement,
            measure_seconds=measure_seconds,
            runtime=runtime,
        )
        _check_out_dir(out_dir, force)  # it may have appeared meanwhile
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _logger.info("wrote %s (model.onnx, model.pt, report.json)", out_dir)
    return ExportResult(out_dir=out_dir, trial=row.number, report=report)


@dataclass
class _Built:
    task: Any
    device: Any
    space: Any
    config: Any
    model: nn.Module


def _rebuild_and_finetune(
    results: RunResults, row: TrialRow, *, finetune_steps: int, seed: int, task_spec: str
) -> _Built:
    from latency_models import get_device
    from nas.tasks._tasks import load_task
    from nas.tasks._train import num_threads, recover
    from search_spaces import CompressionConfig

    settings = results.settings
    device_name = settings.get("device") or results.user_attrs.get("device")
    if not task_spec or not device_name:
        raise RunError(f"{results.run_dir} does not name its task and device; is it a hwnas run?")
    task = load_task(task_spec)  # checked by trusted_task_spec
    device = get_device(str(device_name))
    space = _space(task, align=device.align, bits=tuple(device.precisions))
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
            batch_size=int(settings.get("recovery_batch_size", 64)),
            lr=float(settings.get("recovery_lr", 1e-3)),
        )
    return _Built(task=task, device=device, space=space, config=config, model=model)


def _space(task: Any, *, align: int, bits: tuple[int, ...]) -> Any:
    """The compression space exactly as the search built it (``nas.searching._search.prepare``)."""
    from search_spaces import analyze

    return analyze(task.model, task.example_input, align=align, bits=bits)


def _write_verified(
    built: _Built,
    tmp: Path,
    *,
    results: RunResults,
    row: TrialRow,
    why: str,
    finetune_steps: int,
    seed: int,
    int8_agreement: float,
    measure_seconds: float,
    runtime: str | None,
) -> dict[str, Any]:
    import torch

    onnx_path = tmp / "model.onnx"
    n_calib = int(results.settings.get("calibration_samples", 32))
    X_train, _ = built.task.train
    _export_onnx(built, onnx_path, calibration=X_train[:n_calib].clone())
    verification, accuracy = _verify(built, onnx_path, int8_agreement=int8_agreement)
    measured = _measure(onnx_path, built.device, measure_seconds)
    in_runtime = _runtime_files(onnx_path, runtime or built.device.runtime)
    torch.save(_checkpoint(built, results, row), tmp / "model.pt")
    report = _report(
        built,
        results=results,
        row=row,
        why=why,
        finetune_steps=finetune_steps,
        seed=seed,
        verification=verification,
        accuracy=accuracy,
        measured=measured,
        files={name: _file_info(tmp / name) for name in ("model.onnx", "model.pt")},
    )
    if in_runtime is not None:
        report["runtime"] = in_runtime
    (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _export_onnx(built: _Built, path: Path, *, calibration: Any) -> None:
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


def _verify(
    built: _Built, onnx_path: Path, *, int8_agreement: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Compare ONNX and torch top-1 on the validation set; raise ExportError on mismatch."""
    import numpy as np

    from nas.tasks._onnx_eval import onnx_logits
    from nas.tasks._train import predict_logits

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


def _measure(onnx_path: Path, device: Any, max_seconds: float) -> dict[str, Any]:
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


def _finite(v: Any) -> float | None:
    import math

    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _checkpoint(built: _Built, results: RunResults, row: TrialRow) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "task": str(results.settings.get("task") or results.user_attrs.get("task")),
        "config": built.config.to_dict(),
        "space": {
            "align": int(built.device.align),
            "bits": [int(b) for b in built.device.precisions],
        },
        "device": built.device.name,
        "trial": row.number,
        "state_dict": {k: v.detach().clone() for k, v in built.model.state_dict().items()},
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import optuna
    import torch

    from nas._version import __version__

    return {
        "hwnas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "optuna": optuna.__version__,
    }


def _file_info(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"sha256": digest, "bytes": path.stat().st_size}


def _report(
    built: _Built,
    *,
    results: RunResults,
    row: TrialRow,
    why: str,
    finetune_steps: int,
    seed: int,
    verification: dict[str, Any],
    accuracy: dict[str, float],
    measured: dict[str, Any],
    files: dict[str, Any],
) -> dict[str, Any]:
    from dataclasses import asdict

    device = {k: v for k, v in asdict(built.device).items() if k != "token"}
    predicted = dict(row.predicted) or {k: v for k, v in row.values.items() if k != "accuracy"}
    return {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(results.run_dir.resolve()),
        "trial": row.number,
        "selection": why,
        "task": str(results.settings.get("task") or results.user_attrs.get("task")),
        "summary": row.summary or built.space.summarize(built.config),
        "config": built.config.to_dict(),
        "finetune": {"steps": finetune_steps, "seed": seed, "method": "distillation"},
        "accuracy": {
            **accuracy,
            "metric": "top1 % on the validation set",
            "search_top1": row.accuracy,
            "base_top1": results.base_value("accuracy")[0],
        },
        "verification": verification,
        "measured": measured,
        "measured_in_search": dict(row.measured),
        "predicted": predicted,
        "budget": dict(results.budget),
        "budget_met": _budget_met(measured, results),
        "predicted_energy_source": row.energy_source or None,
        "device": device,
        "versions": _versions(),
        "files": files,
    }


def _budget_met(measured: Mapping[str, Any], results: RunResults) -> bool | None:
    """Whether the export's own measurement meets the run's cost limits (None: no limit)."""
    limits = {k: v for k, v in results.budget.items() if k in ("latency_ms", "energy_mj")}
    values = [(measured.get(k), v) for k, v in limits.items()]
    if not values or any(value is None for value, _ in values):
        return None
    return all(float(value or 0.0) <= limit for value, limit in values)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir`` in one rename; an existing ``out_dir`` goes only after."""
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / "old")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            os.replace(trash / "old", out_dir)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def load_exported(
    path: str | Path, *, task: str | None = None, trust_task: bool = False
) -> nn.Module:
    """Rebuild the torch module saved by :func:`export`.

    The module is the fp32 torch model (int8 layers exist only in ``model.onnx``), in eval
    mode. The task's base model is loaded (and trained once if not cached) to rebuild the
    architecture; the weights then come from the file.

    The weights load without running code (``weights_only``); the task named inside the
    file is code when it is not a bundled or registered name, and is then loaded only when
    the user names it or trusts the file (:func:`trusted_task_spec`).

    Args:
        path: The export folder or its ``model.pt``.
        task: The task the model was exported from, named by the user; default the one
            the file names, if it is bundled or registered.
        trust_task: Import and run the task the file names even when it is code.

    Raises:
        RunError: The file is missing or from an unknown format version.
        TaskError: The file names a task that is code, and neither ``task`` nor
            ``trust_task`` is given.
    """
    import torch

    from nas.tasks._tasks import load_task

    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise RunError(f"{str(file)!r} does not exist; pass an `hwnas export` folder")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle's and torch's many errors for a damaged file
        raise RunError(
            f"{str(file)!r} is not a model.pt written by `hwnas export` or is damaged "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "export the model again"
        ) from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise RunError(
            f"{file} has format_version {version!r}; this hwnas reads {FORMAT_VERSION}. "
            "Export the model again with this version."
        )
    from search_spaces import CompressionConfig

    spec = trusted_task_spec(
        data.get("task"), task=task, trust_task=trust_task, source=f"{str(file)!r}"
    )
    task_obj = load_task(spec)
    space_args = data.get("space", {})
    space = _space(
        task_obj,
        align=int(space_args.get("align", 8)),
        bits=tuple(space_args.get("bits", (32, 8))),
    )
    module: nn.Module = space.apply(task_obj.model, CompressionConfig.from_dict(data["config"]))
    module.load_state_dict(data["state_dict"])
    module.eval()
    return module
