import json
from pathlib import Path

import pytest

from nas import BudgetError, UnknownNameError
from nas.searching._config import ConfigError, SearchConfig


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    config = SearchConfig(task="digits-resnet", budget="latency_ms=1.5")
    assert config.objectives == ("accuracy", "latency_ms")
    assert config.budget == {"latency_ms": 1.5}
    path = config.save(tmp_path)
    assert path.name == "settings.json"
    data = json.loads(path.read_text())
    assert data["objectives"] == ["accuracy", "latency_ms"]
    assert SearchConfig.load(tmp_path) == config


def test_from_dict_rejects_unknown_keys_listing_valid() -> None:
    with pytest.raises(ConfigError) as info:
        SearchConfig.from_dict({"task": "digits-resnet", "n_trails": 3})
    text = str(info.value)
    assert "'n_trails'" in text and "Did you mean 'n_trials'" in text and "recovery_steps" in text
    with pytest.raises(ConfigError, match="need a 'task'"):
        SearchConfig.from_dict({"device": "local-cpu"})


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"n_trials": 0}, ConfigError, "n_trials must be an integer >= 1"),
        ({"workers": "2"}, ConfigError, "workers must be an integer"),
        ({"reject_factor": 0.5}, ConfigError, "reject_factor must be a number >= 1"),
        ({"sampler": "tpee"}, UnknownNameError, "Did you mean 'tpe'"),
        ({"objectives": ["accuracy"]}, BudgetError, "at least two objectives"),
        ({"budget": "latency_ms=1,speed=2"}, BudgetError, "unknown budget key 'speed'"),
    ],
)
def test_bad_values(changes: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SearchConfig.from_dict({"task": "digits-resnet", **changes})


def test_defaults_then_yaml_then_flags(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "task: digits-resnet\nobjectives: [accuracy, latency_ms, memory_mb]\n"
        "n_trials: 7\nsampler: nsga2\nbudget: {memory_mb: 2}\n"
    )
    config = SearchConfig.resolve(file=yaml_file, n_trials=9, seed=None, workers=None)
    assert config.n_trials == 9  # flag beats file
    assert config.sampler == "nsga2"  # file beats default
    assert config.objectives == ("accuracy", "latency_ms", "memory_mb")
    assert config.workers == 1 and config.seed is None  # defaults
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('task = "digits-resnet"\nbudget = "latency_ms=2"\nseed = 4\n')
    assert SearchConfig.resolve(file=toml_file).budget == {"latency_ms": 2.0}


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SearchConfig.resolve(file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: x\nsamplr: tpe\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['samplr'\].*'sampler'"):
        SearchConfig.resolve(file=bad)
    ini = tmp_path / "run.ini"
    ini.write_text("x")
    with pytest.raises(ConfigError, match=r"must end in \.toml"):
        SearchConfig.resolve(file=ini)


def test_identity_differences() -> None:
    a = SearchConfig(task="digits-resnet", device="local-cpu")
    b = a.replace(device="local-cpu-2t", n_trials=99)
    assert b.identity_differences(a) == ["device: 'local-cpu' in the run vs 'local-cpu-2t' now"]
