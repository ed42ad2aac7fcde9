"""The settings of one search, as a frozen :class:`SearchConfig`.

Settings apply in this order: the defaults here, then a TOML or YAML file
(``--config run.yaml``), then command-line flags or keyword arguments. The resolved
settings are saved as ``run_dir/settings.json`` next to the results (timm's ``args.yaml``).

A settings file holds the field names of :class:`SearchConfig`, e.g.::

    task: digits-resnet
    device: local-cpu
    objectives: [accuracy, latency_ms, memory_mb]
    budget: {latency_ms: 1.5, accuracy_drop: 1}
    n_trials: 100
    sampler: nsga2
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._errors import NASError
from nas.searching._budget import parse_budget, parse_objectives

SETTINGS_FILE = "settings.json"
"""Name of the resolved settings inside a run folder."""

# Settings that decide what a run's trials mean: resuming with a different value would mix
# incomparable trials in one study, so it is refused.
IDENTITY_FIELDS: tuple[str, ...] = ("task", "device", "objectives", "budget")


class ConfigError(NASError, ValueError):
    """A settings file or dictionary is malformed (unknown key, bad value)."""


@dataclass(frozen=True)
class SearchConfig:
    """Resolved settings of a search.

    Attributes:
        task: Task name or spec (``"digits-resnet"``, ``"pkg.mod:func"``,
            ``"path/file.py:func"``), see :func:`nas.load_task`.
        device: Device name (see ``hwnas device list``).
        objectives: Two or more of ``accuracy``, ``latency_ms``, ``energy_mj``, ``memory_mb``.
        budget: Limits by key (``latency_ms``, ``energy_mj``, ``memory_mb`` and
            ``accuracy_drop`` in top-1 points); empty for none. A cost limit written
            ``"0.5x"`` is that fraction of the base model's cost measured on the device.
        n_trials: Trials the run should hold when done; finished trials of an earlier,
            interrupted run of the same folder count toward it.
        workers: Trials evaluated at once; more than one runs them as Ray tasks.
        sampler: Sampler name from :data:`nas.SAMPLERS`.
        seed: Seed of the sampler and of the recovery fine-tunes; ``None`` for fresh
            randomness.
        run_dir: The run folder.
        storage: Optuna storage URL; ``None`` for SQLite at ``run_dir/study.db``.
        recovery_steps: Distillation steps that recover each candidate's accuracy.
        recovery_batch_size: Batch size of those steps.
        recovery_lr: Learning rate of those steps.
        warm_start: Enqueue a few informed configs from a per-layer sensitivity scan.
        reject_factor: A candidate whose predicted cost exceeds this many times a budget
            limit is recorded as infeasible without training.
        calibration_samples: Training images used to calibrate int8 layers.
        profile_minutes: Budget of the device profile run first when the device has no
            latency predictor yet, in minutes.
        verify: Measure the final Pareto front on the device.
        fidelity_trials: After the search, re-train this many trials with
            ``fidelity_steps`` and report Kendall's tau against the short recovery (0: skip).
        fidelity_steps: Steps of that longer fine-tune (0: ten times ``recovery_steps``).
        ray_address: Address of a Ray cluster; ``None`` starts a local Ray when workers > 1.
        show_progress_bar: Show a tqdm progress bar (if tqdm is installed).
        costs: Where a trial's latency and energy come from: ``measured`` (every trained
            candidate is measured on the device), ``predicted`` (the device's predictors
            only; the front is measured at the end) or ``auto`` (measured wherever the
            device answers).
        refit_every: Recalibrate the latency predictor on the search's measured candidates
            after this many new measurements (0: never).
        halving_eta: Successive halving of the recovery across trials (0: off): every
            candidate is recovered in ``halving_rungs`` rungs, ``recovery_steps // eta**k``
            steps and up, and only the top ``1/eta`` of each rung goes on, from its own
            weights; the others are recorded as pruned (see ``nas.searching._halving``).
        halving_rungs: Rungs of successive halving, the last at ``recovery_steps``.
        timeout_s: Wall-clock seconds of trials per call (``"90s"``, ``"30m"``, ``"2h"``
            or a number); once spent no trial starts, the running ones finish and the front
            is verified as usual. ``None``: no limit. Re-running resumes with a fresh one.
        resolved_budget: Written by the search: the budget with relative limits turned
            absolute against the base model measured at the start (a resumed search keeps
            them).
        base_measured: Written by the search: the base model's interleaved measurements
            that resolved the budget (median, runs, spread).
    """

    task: str
    device: str = "local-cpu"
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    budget: Mapping[str, float | str] = field(default_factory=dict)
    n_trials: int = 50
    workers: int = 1
    sampler: str = "tpe"
    seed: int | None = None
    run_dir: str | None = None
    storage: str | None = None
    recovery_steps: int = 50
    recovery_batch_size: int = 64
    recovery_lr: float = 1e-3
    warm_start: bool = True
    reject_factor: float = 1.5
    calibration_samples: int = 32
    profile_minutes: float = 5.0
    verify: bool = True
    fidelity_trials: int = 0
    fidelity_steps: int = 0
    ray_address: str | None = None
    show_progress_bar: bool = False
    costs: str = "auto"
    refit_every: int = 5
    halving_eta: int = 0
    halving_rungs: int = 3
    timeout_s: float | None = None
    resolved_budget: Mapping[str, float] | None = None
    base_measured: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        from nas.searching._samplers import SAMPLERS

        if not isinstance(self.task, str) or not self.task:
            raise ConfigError(f"task must be a task name or spec, got {self.task!r}.")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a device name, got {self.device!r}.")
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        object.__setattr__(self, "budget", parse_budget(self.budget).to_dict())
        for name in ("n_trials", "workers"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("recovery_steps", "recovery_batch_size", "calibration_samples"):
            _check_int(name, getattr(self, name), minimum=1 if "size" in name else 0)
        from nas.searching._costs import COST_MODES

        if self.costs not in COST_MODES:
            raise ConfigError(
                f"costs must be one of {list(COST_MODES)}, got {self.costs!r}. 'auto' measures "
                "every trained candidate wherever the device answers."
            )
        for name in ("fidelity_trials", "fidelity_steps", "refit_every"):
            _check_int(name, getattr(self, name), minimum=0)
        from nas.searching._halving import halving_error

        problem = halving_error(self.recovery_steps, self.halving_eta, self.halving_rungs)
        if problem is not None:
            raise ConfigError(problem)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if self.timeout_s is not None:
            try:
                object.__setattr__(self, "timeout_s", parse_duration_s(self.timeout_s))
            except ValueError as exc:
                raise ConfigError(f"timeout_s: {exc}.") from None
        SAMPLERS.get(self.sampler)  # UnknownNameError listing the registered samplers
        if not isinstance(self.reject_factor, (int, float)) or self.reject_factor < 1:
            raise ConfigError(
                f"reject_factor must be a number >= 1, got {self.reject_factor!r}. "
                f"1.5 rejects candidates predicted at more than 1.5x a budget limit."
            )
        for name in ("recovery_lr", "profile_minutes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}.")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        """The valid keys of a settings file, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchConfig:
        """Build settings from a mapping of field names.

        Raises:
            ConfigError: an unknown key (listing the valid ones and the closest), a missing
                ``task``, or a bad value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"settings must be a mapping, got {type(data).__name__}.")
        valid = cls.field_names()
        unknown = [k for k in data if k not in valid]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting(s) {unknown}; valid settings: {valid}.{hint}")
        if "task" not in data:
            raise ConfigError("settings need a 'task' (a task name such as 'digits-resnet').")
        values = dict(data)
        if isinstance(values.get("objectives"), list):
            values["objectives"] = tuple(values["objectives"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) settings file.

        Returns:
            The raw mapping, with keys checked against the field names; merge it with
            :meth:`resolve`.

        Raises:
            ConfigError: the file is missing, unreadable, not a mapping, or has an unknown key.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"settings file {str(path)!r} does not exist.")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                import tomllib

                data: Any = tomllib.loads(text)
            elif path.suffix in {".yaml", ".yml"}:
                import yaml

                data = yaml.safe_load(text) or {}
            elif path.suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(
                    f"settings file {str(path)!r} must end in .toml, .yaml, .yml or .json."
                )
        except ConfigError:
            raise
        except Exception as exc:  # tomllib/yaml/json each raise their own error types
            raise ConfigError(f"cannot parse settings file {str(path)!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"settings file {str(path)!r} must hold a mapping of settings.")
        valid = cls.field_names()
        unknown = [k for k in data if k not in valid]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown setting(s) {unknown} in {str(path)!r}; valid settings: {valid}.{hint}"
            )
        return data

    @classmethod
    def resolve(cls, *, file: str | Path | None = None, **overrides: Any) -> SearchConfig:
        """Defaults, then ``file``, then ``overrides`` (``None`` values are ignored).

        Args:
            file: Optional TOML/YAML/JSON settings file.
            **overrides: Field values, e.g. from command-line flags; a ``None`` means "not
                given" and keeps the file's or the default value.
        """
        data: dict[str, Any] = dict(cls.from_file(file)) if file is not None else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["objectives"] = list(self.objectives)
        out["budget"] = dict(self.budget)
        return out

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/settings.json`` and return its path."""
        path = Path(run_dir) / SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> SearchConfig:
        """Read ``run_dir/settings.json``."""
        path = Path(run_dir) / SETTINGS_FILE
        if not path.is_file():
            raise ConfigError(f"{str(path)!r} does not exist; is {str(run_dir)!r} a run folder?")
        return cls.from_dict(json.loads(path.read_text()))

    def identity_differences(self, other: SearchConfig) -> list[str]:
        """Settings that decide a run's meaning and differ, as ``"key: this vs other"``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {theirs[key]!r} in the run vs {mine[key]!r} now"
            for key in IDENTITY_FIELDS
            if mine[key] != theirs[key]
        ]


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(value: object) -> float:
    """Seconds in a duration: ``"90s"``, ``"30m"``, ``"2h"``, or a number of seconds (> 0).

    Raises:
        ValueError: anything else; the message names the value and the accepted forms.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        try:
            seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else float(value)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"expected a duration such as '90s', '30m', '2h' or a number of seconds > 0, "
            f"got {value!r}"
        )
    return seconds


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


__all__ = ["IDENTITY_FIELDS", "SETTINGS_FILE", "ConfigError", "SearchConfig", "parse_duration_s"]
