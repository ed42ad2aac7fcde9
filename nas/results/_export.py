"""Take one trial of a run home: rebuild, fine-tune, export, verify, measure, write.

:func:`export` rebuilds the trial's compressed model from its stored config (the same
``analyze`` + ``apply`` the search ran on the task's base model), fine-tunes it longer by
distillation from the base model, exports it to ONNX (int8 QDQ where the config says so,
calibrated on training images), and verifies it *before* anything is written:

- the ONNX model's top-1 predictions on the validation set agree with the torch model's:
  all of them for an fp32 config (a sample whose two best torch logits are closer than
  :data:`TIE_MARGIN` is a tie, not a decision, and is not counted), at least
  :data:`INT8_AGREEMENT` of them when layers run in int8 (the torch module stays fp32);
- the graph is measured on the run's device (and, for a relative budget such as
  ``latency_ms=0.5x``, side by side with the base model, which decides ``budget_met``).

The files are written into a temporary folder next to ``out_dir`` and renamed into place in
one step, so a failed export leaves nothing half-written:

- ``model.onnx``: runs in plain onnxruntime;
- ``model.pt``: ``{"format_version", "task", "config", "space", "state_dict", ...}``, rebuilt
  into a torch module by :func:`load_exported`;
- ``report.json``: config, summary, accuracies, verification, measured and predicted
  latency/energy/memory, device, library versions and the files' SHA-256.

The trial is chosen in ``nas.results._selection``, rebuilt and checked in
``nas.results._rebuild``; ``nas.results._export_files`` composes ``model.pt`` and the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError, UsageError
from nas.results._export_files import (
    FORMAT_VERSION,
    checkpoint,
    export_report,
    file_info,
    relative_costs,
)
from nas.results._rebuild import (
    INT8_AGREEMENT,
    TIE_MARGIN,
    Built,
    ExportError,
    compression_space,
    export_onnx_file,
    measure_graph,
    measure_side_by_side,
    rebuild_and_finetune,
    runtime_files,
    verify_graph,
)
from nas.results._selection import (
    candidates,
    choose_trial,
    measured_within_budget,
    trusted_task_spec,
)
from nas.searching._run import Run, read_run
from nas.searching._trial_row import TrialRow

if TYPE_CHECKING:
    from torch import nn

_logger = logging.getLogger(__name__)

DEFAULT_FINETUNE_STEPS = 300
"""Distillation steps before export (the search's recovery uses far fewer)."""


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
        judged = (
            f"  ONNX top-1 {acc.get('onnx_top1', float('nan')):.2f}% on validation "
            f"(torch {acc.get('torch_top1', float('nan')):.2f}%, base "
            f"{acc.get('base_top1', float('nan')):.2f}%); "
            f"top-1 agreement {100 * ver.get('agreement', float('nan')):.2f}%\n"
            if "onnx" not in acc
            else f"  ONNX {acc['metric']}: {acc['onnx']:.4g} (torch {acc['torch']:.4g}, base "
            f"{_fmt_optional(acc.get('base'))}); relative output difference "
            f"{ver.get('relative_rms_diff', float('nan')):.3g}\n"
        )
        return (
            f"exported trial {self.trial} ({r.get('summary', '')}) to {self.out_dir}\n"
            f"  {r.get('selection', '')}\n"
            + judged
            + f"  measured on {r.get('device', {}).get('name', '?')}: latency "
            f"{meas.get('latency_ms', float('nan')):.3f} ms, memory "
            f"{meas.get('memory_mb', float('nan')):.3f} MB, energy "
            f"{_fmt_optional(meas.get('energy_mj'))} mJ ({meas.get('energy_source', '?')})"
            + "".join(_budget_line(key, c) for key, c in r.get("budget_check", {}).items())
        )


def _budget_line(key: str, check: Mapping[str, Any]) -> str:
    verdict = {True: "met", False: "MISSED", None: "not measured"}[check.get("met")]
    if "ratio" in check:
        how = f"{check['ratio']:.2f}x the base model, measured side by side"
    else:
        how = f"{_fmt_optional(check.get('export'))} measured"
    return f"\n  budget {key} <= {check['limit']}: {verdict} ({how})"


def _fmt_optional(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


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
    _check_settings(out_dir, force=force, finetune_steps=finetune_steps,
                    int8_agreement=int8_agreement)  # fmt: skip
    results = read_run(run)
    row, why, task_spec = _chosen_trial(results, trial, task=task, trust_task=trust_task)
    seed = int(results.setting("seed") or 0) if seed is None else seed
    built = rebuild_and_finetune(
        results, row, finetune_steps=finetune_steps, seed=seed, task_spec=task_spec
    )
    tmp = _temp_dir_beside(out_dir)
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


def _check_settings(
    out_dir: Path, *, force: bool, finetune_steps: int, int8_agreement: float
) -> None:
    """Refuse a bad ``out_dir`` (:func:`_check_out_dir`) and settings out of range.

    Raises:
        UsageError: naming the setting and its value.
    """
    _check_out_dir(out_dir, force)
    if finetune_steps < 0:
        raise UsageError(f"finetune_steps must be >= 0, got {finetune_steps}")
    if not 0.0 < int8_agreement <= 1.0:
        raise UsageError(f"int8_agreement must be in (0, 1], got {int8_agreement}")


def _chosen_trial(
    results: Run, trial: int | None, *, task: str | None, trust_task: bool
) -> tuple[TrialRow, str, str]:
    """The trial to export, why it was chosen, and the task to rebuild it with.

    Checked before the fine-tune: the trial must have a stored config, and a task that is
    code must be named or trusted (:func:`trusted_task_spec`).
    """
    row, why = choose_trial(results, trial)
    task_spec = trusted_task_spec(
        results.setting("task"),
        task=task,
        trust_task=trust_task,
        source=f"run folder {str(results.run_dir)!r}",
    )
    _check_rebuildable(results, row)
    _logger.info("exporting %s", why)
    return row, why, task_spec


def _check_rebuildable(results: Run, row: TrialRow) -> None:
    """Refuse a trial without a stored config; warn about one the search never trained."""
    if row.config is None:
        raise RunError(f"trial {row.number} of {results.run_dir} stored no config; cannot rebuild")
    if row.rejected_before_training:
        _logger.warning(
            "trial %d was rejected before training (predicted far outside the budget); "
            "exporting it anyway",
            row.number,
        )


def _temp_dir_beside(out_dir: Path) -> Path:
    """A new empty folder next to ``out_dir``, with the permissions of an ordinary folder."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    return tmp


def _write_verified(
    built: Built,
    tmp: Path,
    *,
    results: Run,
    row: TrialRow,
    why: str,
    finetune_steps: int,
    seed: int,
    int8_agreement: float,
    measure_seconds: float,
    runtime: str | None,
) -> dict[str, Any]:
    import torch

    from nas.tasks._loaders import first_inputs

    onnx_path = tmp / "model.onnx"
    n_calib = int(results.setting("calibration_samples", 32))
    task = built.task
    calibration = first_inputs(task.train if task.calibration is None else task.calibration,
                               n_calib)  # fmt: skip
    export_onnx_file(built, onnx_path, calibration=calibration)
    verification, accuracy = verify_graph(built, onnx_path, int8_agreement=int8_agreement)
    measured = measure_graph(onnx_path, built.device, measure_seconds)
    relative = relative_costs(results)
    side_by_side = (
        measure_side_by_side(built, onnx_path, relative, max_seconds=measure_seconds / 3)
        if relative
        else None
    )
    in_runtime = runtime_files(onnx_path, runtime or built.device.runtime)
    torch.save(checkpoint(built, results, row), tmp / "model.pt")
    report = export_report(
        built,
        results=results,
        row=row,
        why=why,
        finetune_steps=finetune_steps,
        seed=seed,
        verification=verification,
        accuracy=accuracy,
        measured=measured,
        files={name: file_info(tmp / name) for name in ("model.onnx", "model.pt")},
        side_by_side=side_by_side,
    )
    if in_runtime is not None:
        report["runtime"] = in_runtime
    (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


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
    space = compression_space(
        task_obj,
        align=int(space_args.get("align", 8)),
        bits=tuple(space_args.get("bits", (32, 8))),
    )
    module: nn.Module = space.apply(task_obj.model, CompressionConfig.from_dict(data["config"]))
    module.load_state_dict(data["state_dict"])
    module.eval()
    return module


__all__ = [
    "DEFAULT_FINETUNE_STEPS",
    "FORMAT_VERSION",
    "INT8_AGREEMENT",
    "TIE_MARGIN",
    "ExportError",
    "ExportResult",
    "candidates",
    "export",
    "load_exported",
    "measured_within_budget",
    "trusted_task_spec",
]
