"""Devices: named, frozen specs of where and how a graph is run, and their energy meters."""

from __future__ import annotations

from latency_models.devices._spec import (
    BUILTIN_NAMES,
    DEVICES,
    PRECISIONS,
    SPEC_VERSION,
    DeviceSpec,
    add_device,
    device_file,
    devices_dir,
    get_device,
    list_devices,
    load_device_file,
    remove_device,
)

__all__ = [
    "BUILTIN_NAMES",
    "DEVICES",
    "PRECISIONS",
    "SPEC_VERSION",
    "DeviceSpec",
    "add_device",
    "device_file",
    "devices_dir",
    "get_device",
    "list_devices",
    "load_device_file",
    "remove_device",
]
