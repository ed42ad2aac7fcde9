"""Tasks given as Datasets and DataLoaders, with a metric and loss of their own.

A tiny denoising task (a dense-prediction head on the bundled 8x8 digits, metric MSE, lower
is better) goes through a real search, the Pareto front and a verified export; bad data
and bad metrics stop before the first trial, naming what is wrong.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import nas
from nas import TaskError
from nas.tasks._evaluate import task_score, task_score_onnx
from nas.tasks._loaders import first_inputs

TASK_FILE = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from nas import Task


    class Noisy(Dataset):
        def __init__(self, images, seed):
            self.images, self.seed = images, seed

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(self.seed * 10_007 + i)
            clean = self.images[i]
            return clean + 0.5 * torch.randn(clean.shape, generator=g), clean


    def mse(model, loader):
        total = count = 0.0
        for noisy, clean in loader:
            total += float(F.mse_loss(model(noisy), clean, reduction="sum"))
            count += clean.numel()
        return total / count


    def to_teacher_and_target(student_out, teacher_out, clean):
        return F.mse_loss(student_out, teacher_out) + F.mse_loss(student_out, clean)


    _CACHE = {}


    def make_task():  # the search loads the task a few times: train once
        if not _CACHE:
            _CACHE["task"] = _build()
        return _CACHE["task"]


    def _build():
        X = torch.tensor(load_digits().data[:360], dtype=torch.float32).reshape(-1, 1, 8, 8)
        X = (X / 16.0 - 0.3) / 0.4
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 1, 1),
        )
        train, val = Noisy(X[:300], 1), Noisy(X[300:], 2)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        loader = DataLoader(train, batch_size=50, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        for _ in range(2):
            for noisy, clean in loader:
                opt.zero_grad()
                F.mse_loss(model(noisy), clean).backward()
                opt.step()
        return Task(name="tiny-denoise", model=model.eval(), train=train,
                    val=DataLoader(val, batch_size=32), example_input=val[0][0][None],
                    metric=mse, higher_is_better=False, loss=to_teacher_and_target)
    """
)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("dataset-task")
    (folder / "tiny_denoise.py").write_text(TASK_FILE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_HOME", str(folder / "home"))
        yield f"{folder / 'tiny_denoise.py'}:make_task"


@pytest.fixture(scope="module")
def task(spec: str) -> nas.Task:
    return nas.load_task(spec)


def test_streamed_task_scores_as_negated_mse_in_torch_and_onnx(
    task: nas.Task, tmp_path: Path
) -> None:
    from search_spaces import analyze, export_onnx

    assert (task.metric_name, task.score_name) == ("mse", "neg_mse")
    score = task_score(task.model, task)
    assert score < 0  # -mse: higher is better
    space = analyze(task.model, task.example_input, align=8, bits=(32, 8))
    config = space.identity()
    model = space.apply(task.model, config)
    exported = export_onnx(model, config, task.example_input, tmp_path / "m.onnx",
                           calibration=first_inputs(task.train, 16))  # fmt: skip
    onnx_score = task_score_onnx(getattr(exported, "path", tmp_path / "m.onnx"), task)
    assert onnx_score == pytest.approx(score, rel=1e-4)


def test_recovery_streams_the_dataset_with_the_task_loss(task: nas.Task) -> None:
    from search_spaces import analyze

    space = analyze(task.model, task.example_input, align=8, bits=(32,))
    small = space.apply(task.model, space.smallest())
    before = task_score(small, task)
    nas.recover(small, task.model, task, steps=20, seed=0)
    assert task_score(small, task) > before  # lower mse


def test_search_pareto_and_export_minimise_the_metric(spec: str, tmp_path: Path) -> None:
    from latency_models import DeviceSpec, add_device

    add_device(DeviceSpec(name="dataset-task-cpu", threads=1, description="tests"),
               replace=True)  # fmt: skip
    run_dir = tmp_path / "run"
    search: dict[str, Any] = dict(
        device="dataset-task-cpu", objectives=("accuracy", "latency_ms"),
        budget={"accuracy_drop": 10}, n_trials=2, run_dir=run_dir, recovery_steps=10, seed=0,
        profile_minutes=0.1, warm_start=False, verify=False,
    )  # fmt: skip
    nas.search(spec, **search)
    run = nas.open_run(run_dir)
    trials = [t for t in run.completed_trials() if t.user_attrs.get("accuracy") is not None]
    assert trials
    for t in trials:
        assert t.user_attrs["metric"] == "neg_mse"
        assert t.values[0] == t.user_attrs["accuracy"] < 0
    assert run.study.user_attrs["metric"]["metric"] == "mse"
    assert run.study.directions[0].name == "MAXIMIZE"  # of -mse: mse is minimised
    resumed = dict(search, n_trials=3)
    nas.search(spec, **resumed)  # the same search, resumed from its folder: one more trial
    run = nas.open_run(run_dir)
    assert len(run.completed_trials()) == 3
    assert {t.user_attrs["metric"] for t in run.completed_trials()} == {"neg_mse"}
    table = nas.pareto_table(run_dir)
    assert "neg_mse" in table
    out = tmp_path / "export"
    result = nas.export(run_dir, out_dir=out, task=spec, finetune_steps=10,
                        measure_seconds=0.2)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    accuracy = report["accuracy"]
    assert accuracy["metric"].startswith("mse") and accuracy["higher_is_better"] is False
    assert accuracy["onnx"] > 0 and math.isfinite(accuracy["base"]) and accuracy["base"] > 0
    assert report["verification"]["passed"]
    assert "mse" in result.summary()


# -- bad input: each stops before the first trial, naming what is wrong ------------------------


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 3))


class _NotPairs(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.zeros(1, 8, 8)


def _data(n: int = 8, shape: tuple[int, ...] = (1, 8, 8)) -> TensorDataset:
    return TensorDataset(torch.randn(n, *shape), torch.randint(0, 3, (n,)))


def test_dataset_items_must_be_input_target_pairs() -> None:
    with pytest.raises(TaskError, match=r"train dataset item 0 must be an \(input, target\) pair"):
        nas.Task(name="t", model=_model(), train=_NotPairs(), val=_data(),
                 example_input=torch.zeros(1, 1, 8, 8))  # fmt: skip


def test_loader_input_shape_must_match_example_input() -> None:
    loader = DataLoader(_data(shape=(1, 9, 9)), batch_size=4)
    with pytest.raises(TaskError, match=r"val loader batch 0 input has shape \(4, 1, 9, 9\)"):
        nas.Task(name="t", model=_model(), train=_data(), val=loader,
                 example_input=torch.zeros(1, 1, 8, 8))  # fmt: skip


def test_float_targets_need_a_loss() -> None:
    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.randn(8, 3))
    with pytest.raises(TaskError, match="Pass loss="):
        nas.Task(name="t", model=_model(), train=data, val=data,
                 example_input=torch.zeros(1, 1, 8, 8), metric=lambda m, loader: 0.0)  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (lambda model, loader: float("nan"), r"returned nan; it must return a finite number"),
        (lambda model, loader: "good", r"returned str 'good'; it must return a float"),
    ],
)
def test_bad_metric_stops_the_search_before_any_trial(
    metric: Any, message: str, tmp_path: Path
) -> None:
    task = nas.Task(name="bad-metric", model=_model(), train=_data(), val=_data(),
                    example_input=torch.zeros(1, 1, 8, 8), metric=metric)  # fmt: skip
    with pytest.raises(TaskError, match=r"metric metric\(model, val loader\) of task 'bad-metric'"
                       ) as info:  # fmt: skip
        nas.search(task, device="local-cpu", run_dir=tmp_path / "run", n_trials=1)
    assert info.match(message)
    assert not (tmp_path / "run" / "study.db").exists()


def test_tensor_pairs_with_a_callable_metric_and_loss(tmp_path: Path) -> None:
    X, y = torch.randn(16, 1, 8, 8), torch.randn(16, 3)

    def neg_l1(model: nn.Module, loader: Any) -> float:
        return -sum(float(F.l1_loss(model(a), b, reduction="sum")) for a, b in loader)

    task = nas.Task(name="t", model=_model(), train=(X, y), val=(X, y),
                    example_input=X[:1], metric=neg_l1,
                    loss=lambda s, t, target: F.mse_loss(s, target))  # fmt: skip
    before = task_score(task.model, task)
    student = _model()
    student.load_state_dict(task.model.state_dict())
    nas.recover(student, task.model, task, steps=30, lr=1e-2)
    assert task_score(student, task) > before
