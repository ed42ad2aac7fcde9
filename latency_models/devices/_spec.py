"""Devices: named, frozen specs of how and where an ONNX graph is run.

Built-ins describe this machine (``local-cpu`` with one thread, ``local-cpu-2t`` with two);
a user's devices are JSON files under ``home_dir()/devices/<name>.json``, loaded when they are
looked up. A device runs here (``location="local"``), on a measurement agent
(``"http://HOST:PORT"``, see :mod:`latency_models.agent`) or in a Ray task on the node that
holds a custom resource (``"ray:RESOURCE"``).

Example:
    >>> from latency_models import DeviceSpec, add_device
    >>> add_device(DeviceSpec("pi4", threads=4, location="http://10.0.0.7:8765", token="..."))
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from latency_models._errors import IncompatibleArtifactError, UnknownNameError
from latency_models._home import home_dir
from latency_models._registry import Registry
from latency_models.devices._meters import METER_KINDS, rapl_readable

_logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HTTP_RE = re.compile(r"^https?://[^/\s:]+(:\d{1,5})?/?$")
_RAY_RE = re.compile(r"^ray:[A-Za-z0-9_.-]+$")
PRECISIONS = (32, 16, 8, 4)
SPEC_VERSION = 1


@dataclass(frozen=True)
class DeviceSpec:
    """How and where to run an ONNX graph.

    Attributes:
        name: Registry key; letters, digits, ``.``, ``_``, ``-`` (it names files).
        providers: onnxruntime execution providers in priority order.
        threads: onnxruntime intra-op threads (inter-op is always 1, execution sequential).
        batch_size: Value of dynamic first input dimensions.
        location: ``"local"``, ``"http://HOST:PORT"`` (a measurement agent) or
            ``"ray:RESOURCE"`` (a Ray task holding one unit of that custom resource).
        token: The agent's token (HTTP devices); ``None`` reads ``$HWNAS_AGENT_TOKEN``.
        precisions: Bit-widths the runtime executes as real kernels (32, 16, 8, 4).
        align: Channel alignment the kernels like (widths are multiples of it).
        energy_meter: ``"none"``, ``"rapl"`` or ``"nvml"``.
        description: Free text.
        runtime: The runtime that runs the graph (:mod:`latency_models.runtimes`):
            ``"onnxruntime"``, ``"openvino"``, ``"ncnn"``, ``"mnn"`` or ``"tvm"``.
            ``precisions`` defaults to what it executes natively (int8 only where it has
            an int8 path); asking it for more is refused here, not in a trial.
    """

    name: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 1
    batch_size: int = 1
    location: str = "local"
    token: str | None = field(default=None, repr=False)
    precisions: tuple[int, ...] = None  # type: ignore[assignment]  # None: the runtime's native ones
    align: int = 8
    energy_meter: str = "none"
    description: str = ""
    runtime: str = "onnxruntime"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"DeviceSpec.name must be 1-64 letters, digits, '.', '_' or '-' starting with a "
                f"letter or digit, got {self.name!r}. Example: 'pi4-cpu'."
            )
        providers = self.providers
        if isinstance(providers, str):
            providers = (providers,)
        providers = tuple(providers)
        if not providers or not all(isinstance(p, str) and p for p in providers):
            raise ValueError(
                f"DeviceSpec.providers must be a non-empty sequence of onnxruntime provider "
                f"names, got {self.providers!r}. Example: ('CPUExecutionProvider',)."
            )
        object.__setattr__(self, "providers", providers)
        for attr in ("threads", "batch_size", "align"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"DeviceSpec.{attr} must be an integer >= 1, got {value!r}."
                    + (" Use 1 for a single thread." if attr == "threads" else "")
                )
        loc = self.location
        if not isinstance(loc, str) or not (
            loc == "local" or _HTTP_RE.match(loc) or _RAY_RE.match(loc)
        ):
            raise ValueError(
                f"DeviceSpec.location must be 'local', 'http://HOST:PORT' or 'ray:RESOURCE', "
                f"got {loc!r}. Example: 'http://192.168.1.20:8765'."
            )
        object.__setattr__(self, "location", loc.rstrip("/"))
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("DeviceSpec.token must be a non-empty string or None.")
        backend = _backend(self.runtime)
        native = (32, 8) if backend.int8 else (32,)
        precisions = native if self.precisions is None else tuple(self.precisions)
        bad = [p for p in precisions if p not in PRECISIONS]
        if not precisions or bad:
            raise ValueError(
                f"DeviceSpec.precisions must be a non-empty subset of {list(PRECISIONS)}, got "
                f"{self.precisions!r}. Example: (32, 8)."
            )
        if self.runtime != "onnxruntime" and set(precisions) - set(native):
            raise ValueError(
                f"DeviceSpec.precisions {list(precisions)} asks {self.runtime} for bit-widths it "
                f"does not execute natively; it runs {list(native)}. Leave precisions out, or "
                f"use precisions={native}."
            )
        object.__setattr__(self, "precisions", precisions)
        if self.energy_meter not in METER_KINDS:
            raise ValueError(
                f"DeviceSpec.energy_meter must be one of {list(METER_KINDS)}, got "
                f"{self.energy_meter!r}."
            )
        if not isinstance(self.description, str):
            raise TypeError(f"DeviceSpec.description must be a str, got {self.description!r}.")

    @property
    def kind(self) -> str:
        """``"local"``, ``"http"`` or ``"ray"``."""
        if self.location == "local":
            return "local"
        return "ray" if self.location.startswith("ray:") else "http"

    def agent_token(self) -> str | None:
        """The token sent to an agent: :attr:`token`, else ``$HWNAS_AGENT_TOKEN``."""
        return self.token or os.environ.get("HWNAS_AGENT_TOKEN") or None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with ``_type`` and ``version`` keys."""
        data = asdict(self)
        data["providers"] = list(self.providers)
        data["precisions"] = list(self.precisions)
        return {"_type": "DeviceSpec", "version": SPEC_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceSpec:
        """Inverse of :meth:`to_dict`; unknown keys are rejected with the valid ones."""
        data = dict(data)
        if data.pop("_type", "DeviceSpec") != "DeviceSpec":
            raise ValueError(f"not a DeviceSpec dict: _type={data.get('_type')!r}.")
        version = data.pop("version", SPEC_VERSION)
        if version > SPEC_VERSION:
            raise IncompatibleArtifactError(
                f"device spec version {version} is newer than this hwnas understands "
                f"({SPEC_VERSION}); upgrade hwnas."
            )
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown DeviceSpec keys {unknown}; valid keys: {sorted(valid)}.")
        for key in ("providers", "precisions"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)


def _backend(name: object) -> Any:
    """The runtime backend ``name`` names; ValueError lists the known ones."""
    from latency_models.runtimes import get_runtime

    if not isinstance(name, str):
        raise ValueError(f"DeviceSpec.runtime must be a runtime name, got {name!r}.")
    try:
        return get_runtime(name)
    except ValueError as exc:
        raise ValueError(f"DeviceSpec.runtime: {exc}") from exc


def devices_dir() -> Path:
    """Where user devices are saved: ``home_dir()/devices``."""
    return home_dir() / "devices"


def device_file(name: str) -> Path:
    """The JSON file of user device ``name``."""
    return devices_dir() / f"{name}.json"


_OTHER_RUNTIMES = ("openvino", "ncnn", "mnn", "tvm")
BUILTIN_NAMES = ("local-cpu", "local-cpu-2t", *(f"local-{r}" for r in _OTHER_RUNTIMES))


def _builtin(name: str) -> DeviceSpec:
    meter = "rapl" if rapl_readable() else "none"
    threads = 2 if name == "local-cpu-2t" else 1
    runtime = name[len("local-") :] if name[len("local-") :] in _OTHER_RUNTIMES else "onnxruntime"
    return DeviceSpec(
        name=name,
        threads=threads,
        energy_meter=meter,
        runtime=runtime,
        description=f"this machine's CPU, {runtime} with {threads} thread(s)",
    )


class _DeviceRegistry(Registry[DeviceSpec]):
    """The device registry: built-ins created on first use, user devices read from files."""

    def get(self, name: str) -> DeviceSpec:
        if name not in self._entries:
            if name in BUILTIN_NAMES:
                return self.add(name, _builtin(name))
            if isinstance(name, str) and _NAME_RE.match(name):
                path = device_file(name)
                if path.is_file():
                    return self.add(name, load_device_file(path))
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def names(self, pattern: str | None = None) -> list[str]:
        on_disk = (
            {p.stem for p in devices_dir().glob("*.json")} if devices_dir().is_dir() else set()
        )
        all_names = sorted(set(self._entries) | on_disk | set(BUILTIN_NAMES))
        if pattern is not None:
            import fnmatch

            all_names = [n for n in all_names if fnmatch.fnmatchcase(n, pattern)]
        return all_names

    def __contains__(self, name: object) -> bool:
        return name in self.names()


DEVICES: Registry[DeviceSpec] = _DeviceRegistry("device")
"""All devices: built-ins, those added in this process, and those saved under the home."""


def load_device_file(path: Path) -> DeviceSpec:
    """Read a device JSON file.

    Raises:
        IncompatibleArtifactError: the file is not valid JSON or not a device spec.
    """
    try:
        data = json.loads(Path(path).read_text())
        spec = DeviceSpec.from_dict(data)
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise IncompatibleArtifactError(
            f"device file {str(path)!r} is unreadable: {exc}. Fix or delete it, then add the "
            "device again (`hwnas device add`)."
        ) from exc
    if spec.name != Path(path).stem:
        raise IncompatibleArtifactError(
            f"device file {str(path)!r} holds device {spec.name!r}; its file name must match."
        )
    return spec


def get_device(name: str | DeviceSpec) -> DeviceSpec:
    """The device called ``name`` (a :class:`DeviceSpec` is returned as is).

    Raises:
        UnknownNameError: listing the registered devices and the closest name.
    """
    if isinstance(name, DeviceSpec):
        return name
    return DEVICES.get(name)


def list_devices() -> list[str]:
    """Sorted names of all devices: built-ins, added in this process, saved under the home."""
    return DEVICES.names()


def add_device(spec: DeviceSpec, *, save: bool = True, replace: bool = False) -> DeviceSpec:
    """Register ``spec``; with ``save`` also write it to ``home_dir()/devices/<name>.json``.

    A saved file that holds a token is readable by its owner only.

    Raises:
        DuplicateNameError: the name is taken (a built-in, or saved) and not ``replace``.
        ValueError: ``replace`` of a built-in.
    """
    if not isinstance(spec, DeviceSpec):
        raise TypeError(f"add_device needs a DeviceSpec, got {type(spec).__name__}.")
    if spec.name in BUILTIN_NAMES:
        raise ValueError(
            f"{spec.name!r} is a built-in device and cannot be replaced; choose another name."
        )
    if not replace and spec.name in DEVICES:
        from latency_models._errors import DuplicateNameError

        raise DuplicateNameError(
            f"device {spec.name!r} already exists ({device_file(spec.name)}). Choose another "
            "name, or pass replace=True (CLI: --replace) to overwrite it."
        )
    DEVICES.add(spec.name, spec, replace=True)
    if save:
        path = device_file(spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
        if spec.token:
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        _logger.info("saved device %s to %s", spec.name, path)
    return spec


def remove_device(name: str, *, keep_measurements: bool = False) -> Path | None:
    """Forget user device ``name``: delete its file and its folder (measurements, predictors).

    A device added again under the same name then starts empty, instead of taking up the
    measurements of the removed one.

    Args:
        name: The device.
        keep_measurements: Keep the folder ``home_dir()/devices/<name>/``.

    Returns:
        The folder that was kept or deleted, or None when there was none.

    Raises:
        ValueError: ``name`` is a built-in.
        UnknownNameError: no such device.
    """
    if name in BUILTIN_NAMES:
        raise ValueError(f"{name!r} is a built-in device and cannot be removed.")
    DEVICES.get(name)
    DEVICES._entries.pop(name, None)
    device_file(name).unlink(missing_ok=True)
    folder = devices_dir() / name
    if not folder.is_dir():
        return None
    if not keep_measurements:
        import shutil

        shutil.rmtree(folder)
    return folder
