import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from latency_models import (
    DEVICES,
    DeviceSpec,
    DuplicateNameError,
    IncompatibleArtifactError,
    UnknownNameError,
    add_device,
    get_device,
    list_devices,
    remove_device,
)
from latency_models.devices import device_file


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    saved = dict(DEVICES._entries)
    yield tmp_path
    DEVICES._entries.clear()
    DEVICES._entries.update(saved)


def test_builtins() -> None:
    assert {"local-cpu", "local-cpu-2t"} <= set(list_devices())
    one, two = get_device("local-cpu"), get_device("local-cpu-2t")
    assert (one.threads, two.threads) == (1, 2)
    assert one.kind == "local"
    expected = (
        "rapl" if os.access("/sys/class/powercap/intel-rapl:0/energy_uj", os.R_OK) else "none"
    )
    assert one.energy_meter == expected


def test_unknown_device_lists_names_and_closest() -> None:
    with pytest.raises(
        UnknownNameError, match=r"registered: \[.*'local-cpu'.*Did you mean 'local-cpu'"
    ):
        get_device("locl-cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "DeviceSpec.name must be"),
        ({"threads": 0}, r"threads must be an integer >= 1, got 0"),
        ({"batch_size": -1}, "batch_size must be"),
        ({"location": "ftp://x"}, "location must be 'local'"),
        ({"precisions": (32, 7)}, r"precisions must be a non-empty subset"),
        ({"energy_meter": "watts"}, "energy_meter must be one of"),
        ({"providers": ()}, "providers must be"),
    ],
)
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceSpec(**{"name": "dev", **kwargs})


def test_locations_and_roundtrip() -> None:
    http = DeviceSpec("pi", location="http://10.0.0.7:8765/", token="t", threads=4)
    assert http.location == "http://10.0.0.7:8765" and http.kind == "http"
    assert DeviceSpec("r", location="ray:bench").kind == "ray"
    assert DeviceSpec.from_dict(json.loads(json.dumps(http.to_dict()))) == http
    with pytest.raises(ValueError, match="unknown DeviceSpec keys"):
        DeviceSpec.from_dict({**http.to_dict(), "speed": 3})
    assert "token" not in repr(DeviceSpec("pi", token="s3cret"))


def test_add_saves_and_loads_from_file(home: Path) -> None:
    spec = DeviceSpec("pi4", location="http://127.0.0.1:9", token="secret", threads=4)
    add_device(spec)
    path = device_file("pi4")
    assert path == home / "devices" / "pi4.json" and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # holds a token
    DEVICES._entries.pop("pi4")  # a fresh process: only the file is left
    assert "pi4" in list_devices()
    assert get_device("pi4") == spec
    with pytest.raises(DuplicateNameError, match="already exists"):
        add_device(spec)
    add_device(DeviceSpec("pi4", threads=2), replace=True)
    assert get_device("pi4").threads == 2
    remove_device("pi4")
    assert not path.exists() and "pi4" not in list_devices()


def test_builtin_cannot_be_replaced_or_removed() -> None:
    with pytest.raises(ValueError, match="built-in"):
        add_device(DeviceSpec("local-cpu", threads=3), replace=True)
    with pytest.raises(ValueError, match="built-in"):
        remove_device("local-cpu")


def test_corrupt_device_file_is_reported(home: Path) -> None:
    (home / "devices").mkdir()
    (home / "devices" / "broken.json").write_text("{not json")
    with pytest.raises(IncompatibleArtifactError, match=r"broken\.json"):
        get_device("broken")
