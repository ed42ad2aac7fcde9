"""A device profile that includes a task's compressed variants (``hwnas device profile``).

The profile itself lives in :mod:`latency_models.profiling`; this adds what needs torch:
the task's model compressed by random configs of its space, exported as a search exports
them, so the predictor has seen graphs like the ones it will screen.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latency_models.profiling._profile import ProfileResult, evaluate_device
from latency_models.profiling._profile import profile_device as _profile_device

if TYPE_CHECKING:
    import onnx

    from nas.tasks._tasks import Task

__all__ = ["SWEEPS", "ProfileResult", "evaluate_device", "profile_device", "task_variant_graphs"]


def task_variant_graphs(
    task: str | Task, *, n: int, seed: int = 0, align: int = 8, bits: tuple[int, ...] = (32, 8)
) -> Iterator[tuple[str, onnx.ModelProto]]:
    """Compressed variants of a task's model, exported as a search exports them.

    The identity and the smallest config come first, then random configs of the task's
    compression space (optuna's random sampler with ``seed``).

    Args:
        task: The task, or its name or spec (see :func:`nas.load_task`).
        n: Number of variants.
        seed: Seed of the random configs.
        align: Channel alignment of the device.
        bits: Bit-widths the device runs.

    Yields:
        (name, graph) pairs.
    """
    import onnx
    import optuna

    from nas.tasks._tasks import load_task
    from search_spaces import analyze, export_onnx

    t = load_task(task) if isinstance(task, str) else task
    space = analyze(t.model, t.example_input, align=align, bits=tuple(b for b in bits if b >= 8))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    from nas.tasks._loaders import first_inputs

    calibration = first_inputs(t.train if t.calibration is None else t.calibration, 16)
    with tempfile.TemporaryDirectory(prefix="hwnas-profile-") as tmp:
        for i in range(n):
            if i == 0:
                name, config = "identity", space.identity()
            elif i == 1:
                name, config = "smallest", space.smallest()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    config = space.sample(study.ask())
                name = f"random{seed}-{i}"
            model = space.apply(t.model, config)
            path = Path(tmp) / f"{i}.onnx"
            export_onnx(model, config, t.example_input, path, calibration=calibration)
            yield f"{t.name}:{name}", onnx.load(str(path))


SWEEPS = ("auto", "small", "wide")
"""``profile_device(sweep=...)`` choices: ``small`` kernels and CNNs up to 128 px, ``wide``
ImageNet-size kernels and networks (:func:`latency_models.sweep_graphs` ``wide=True``), or
``auto``: wide when the task's input is at least :data:`WIDE_FROM_PX` pixels, else small."""
WIDE_FROM_PX = 64


def _resolve_sweep(sweep: str, task: Task | None) -> bool:
    """Whether the profile measures the wide sweep (``sweep`` is one of :data:`SWEEPS`)."""
    if sweep != "auto":
        return sweep == "wide"
    if task is None:
        return False
    shape = tuple(task.example_input.shape)
    return len(shape) >= 4 and min(shape[-2:]) >= WIDE_FROM_PX


def profile_device(
    device: str,
    *,
    task: str | Task | None = None,
    sweep: str = "auto",
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> ProfileResult:
    """Profile ``device`` (:func:`latency_models.profiling.profile_device`), with a task.

    Args:
        device: Registered device name.
        task: Task whose compressed variants to include (name, ``module:function`` or task).
        sweep: The generic graphs measured: ``"small"``, ``"wide"`` or ``"auto"`` (see
            :data:`SWEEPS`).
        progress: Called with one line per step (the CLI prints them).
        **options: ``budget_minutes``, ``initial_share``, ``round_size``, ``seed``,
            ``max_seconds_per_graph``.

    Raises:
        ValueError: ``sweep`` is not one of :data:`SWEEPS`.
    """
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {SWEEPS}, got {sweep!r}.")
    from nas.tasks._tasks import load_task

    loaded = load_task(task) if isinstance(task, str) else task  # once: it may be slow

    def variants(seed: int, spec: Any) -> Iterator[tuple[str, onnx.ModelProto]]:
        assert loaded is not None
        return task_variant_graphs(
            loaded, n=10**6, seed=seed, align=spec.align, bits=tuple(spec.precisions)
        )

    return _profile_device(
        device,
        extra=None if loaded is None else variants,
        wide=_resolve_sweep(sweep, loaded),
        progress=progress,
        **options,
    )
