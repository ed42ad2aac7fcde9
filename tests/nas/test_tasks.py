from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _task_fixtures import bundled_home
from torch import nn

import nas
from nas import TaskError, UnknownNameError
from nas.tasks import _tasks as tasks_mod
from nas.tasks._tasks import TASKS, Task, get_task, list_tasks, load_task
from nas.tasks._train import TrainConfig, evaluate, num_threads

BUNDLED = ["digits-mobilenetv2", "digits-resnet", "mnist-mobilenetv2", "mnist-resnet"]

USER_TASK = """
from __future__ import annotations

import torch
from torch import nn

from nas import Task


def make_task():
    torch.manual_seed(0)
    X = torch.randn(20, 1, 4, 4)
    y = torch.arange(20) % 3
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    return Task(name="user", model=model, train=(X, y), val=(X[:10], y[:10]),
                example_input=X[:1], description="a user task")


def wrong_type():
    return 42


def broken():
    raise RuntimeError("no data here")


NOT_A_FUNCTION = 3
"""


@pytest.fixture(scope="module")
def digits_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from bundled_home(tmp_path_factory)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # one torch thread: on a shared, busy machine two threads per process oversubscribe
    with num_threads(1):
        yield


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_task.py"
    path.write_text(USER_TASK)
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def task_log():
    handler = _Records()
    logger = logging.getLogger("nas.tasks._tasks")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture()
def quick_recipes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Bundled digits recipes cut to 2 epochs, in an empty HWNAS_HOME."""
    real = tasks_mod._recipes

    def _short() -> dict[str, tasks_mod._Recipe]:
        out = real()
        for name in ("digits-resnet", "digits-mobilenetv2"):
            recipe = out[name]
            short = dataclasses.replace(recipe.train, epochs=2)
            out[name] = dataclasses.replace(recipe, train=short)
        return out

    monkeypatch.setattr(tasks_mod, "_recipes", _short)
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_list_tasks_and_registry() -> None:
    assert set(BUNDLED) <= set(list_tasks())
    assert list_tasks("digits-*") == ["digits-mobilenetv2", "digits-resnet"]
    for name in BUNDLED:
        assert TASKS.get(name).description
    assert nas.get_task is get_task and nas.Task is Task


def test_unknown_task_lists_known_and_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist-resnet'") as info:
        get_task("mnist-resnt")
    assert "digits-resnet" in str(info.value)
    with pytest.raises(UnknownNameError, match=r"package\.module:function"):
        load_task("mnist-resnt")


def test_bundled_digits_tasks_are_accurate(digits_home: Path) -> None:
    for name in ("digits-resnet", "digits-mobilenetv2"):
        task = get_task(name)
        assert task.num_classes == 10 and task.example_input.shape == (1, 1, 8, 8)
        assert not task.model.training
        assert evaluate(task.model, *task.val) >= 95.0
    cached = sorted(p.name for p in (digits_home / "models").glob("*.pt"))
    assert [c.rsplit("-", 1)[0] for c in cached] == ["digits-mobilenetv2", "digits-resnet"]


def test_training_is_deterministic(quick_recipes: Path) -> None:
    recipe = tasks_mod._recipes()["digits-resnet"]
    split = tasks_mod._load_split("digits")
    a = tasks_mod._train_recipe(recipe, split).state_dict()
    b = tasks_mod._train_recipe(recipe, split).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    other = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=1))
    c = tasks_mod._train_recipe(other, split).state_dict()
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_cache_is_reused_then_rebuilt_when_corrupted(
    quick_recipes: Path, monkeypatch: pytest.MonkeyPatch, task_log: list[logging.LogRecord]
) -> None:
    first = get_task("digits-resnet")
    weights = tasks_mod.task_cache_path("digits-resnet")
    sidecar = weights.with_suffix(".json")
    assert weights.is_file() and sidecar.is_file()
    meta = json.loads(sidecar.read_text())
    assert meta["sha256"] == tasks_mod._sha256(weights) and meta["val_top1"] > 10
    mtime = weights.stat().st_mtime_ns

    calls: list[str] = []
    real_train = tasks_mod._train_recipe
    monkeypatch.setattr(
        tasks_mod, "_train_recipe", lambda r, s: calls.append("train") or real_train(r, s)
    )
    second = get_task("digits-resnet")
    assert calls == [] and weights.stat().st_mtime_ns == mtime
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key])

    # flip one byte: the sha256 no longer matches, a warning is logged and it retrains
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    third = get_task("digits-resnet")
    assert calls == ["train"]
    warnings = [r.getMessage() for r in task_log if r.levelno == logging.WARNING]
    assert any("sha256 mismatch" in w and "retraining" in w for w in warnings)
    assert json.loads(sidecar.read_text())["sha256"] == tasks_mod._sha256(weights)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, third.model.state_dict()[key])  # deterministic rebuild

    # a missing or garbled sidecar is also a rebuild, not a load
    sidecar.write_text("{not json")
    get_task("digits-resnet")
    assert calls == ["train", "train"]


def test_recipe_hash_changes_with_recipe(quick_recipes: Path) -> None:
    recipe = tasks_mod._recipes()["digits-resnet"]
    split = tasks_mod._load_split("digits")
    base = tasks_mod._recipe_hash("digits-resnet", recipe, split)
    changed = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, lr=0.01))
    assert tasks_mod._recipe_hash("digits-resnet", changed, split) != base
    assert tasks_mod._recipe_hash("digits-resnet", recipe, split) == base


def test_load_task_from_file(user_file: Path) -> None:
    task = load_task(f"{user_file}:make_task")
    assert isinstance(task, Task) and task.name == "user" and task.num_classes == 3
    assert task.description == "a user task"


def test_load_task_from_module(user_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    try:
        task = load_task("my_task:make_task")
    finally:
        sys.modules.pop("my_task", None)
    assert task.name == "user"


def test_load_task_bundled_name(digits_home: Path) -> None:
    assert load_task("digits-resnet").name == "digits-resnet"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("{file}:wrong_type", r"returned int, expected a nas.Task"),
        ("{file}:broken", r"raised RuntimeError: no data here"),
        ("{file}:missing", r"has no function 'missing'.*make_task"),
        ("{file}:NOT_A_FUNCTION", r"is a int, not a function"),
        ("{dir}/nope.py:make_task", r"does not exist"),
        ("no_such_module_xyz:make_task", r"cannot import module 'no_such_module_xyz'"),
        ("{file}", r"names no function.*'package.module:function'"),
        ("{file}:", r"malformed task spec.*'path/to/file.py:function'"),
        (":make_task", r"malformed task spec"),
        ("", r"non-empty string"),
    ],
)
def test_load_task_bad_specs(user_file: Path, spec: str, match: str) -> None:
    spec = spec.format(file=user_file, dir=user_file.parent)
    with pytest.raises(TaskError, match=match):
        load_task(spec)


def test_file_that_fails_to_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(TaskError, match=r"importing task file .*ModuleNotFoundError"):
        load_task(f"{bad}:make_task")


def test_task_validates_fields() -> None:
    X, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    model = nn.Flatten()
    with pytest.raises(TaskError, match="y must be an int64 tensor"):
        Task("t", model, (X, y.float()), (X, y), X[:1])
    with pytest.raises(TaskError, match="batch size 1"):
        Task("t", model, (X, y), (X, y), X[:2])
    with pytest.raises(TaskError, match=r"model must be a torch\.nn\.Module"):
        Task("t", "model", (X, y), (X, y), X[:1])  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="same non-zero length"):
        Task("t", model, (X, y[:3]), (X, y), X[:1])
    with pytest.raises(TaskError, match="metric must be 'top1'"):
        Task("t", model, (X, y), (X, y), X[:1], metric="f1")
    model.train()
    task = Task("t", model, (X, y), (X, y), X[:1])
    assert task.num_classes == 2 and not task.model.training
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "other"  # type: ignore[misc]


def test_custom_task_example_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "experiments" / "custom_task.py"
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    with num_threads(1):
        task = load_task(f"{example}:make_task")
    assert isinstance(task, Task) and evaluate(task.model, *task.val) > 50.0


def test_train_config_checks() -> None:
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        TrainConfig(epochs=0)
