from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _task_fixtures import bundled_home
from torch import nn

from nas.tasks._onnx_eval import evaluate_onnx, onnx_logits
from nas.tasks._recovery import _TEACHER_LOGITS, distill, recover
from nas.tasks._tasks import Task, get_task
from nas.tasks._train import evaluate, num_threads, recalibrate_bn


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Task]:
    for _ in bundled_home(tmp_path_factory):
        yield get_task("digits-resnet")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # one torch thread: on a shared, busy machine two threads per process oversubscribe
    with num_threads(1):
        yield


def _perturbed(model: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    student = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
    return student


def test_evaluate_percent_and_restores_mode(task: Task) -> None:
    model = copy.deepcopy(task.model).train()
    X, y = task.val
    top1 = evaluate(model, X, y)
    assert 0.0 <= top1 <= 100.0 and model.training
    manual = (task.model(X).argmax(1) == y).float().mean().item() * 100
    assert top1 == pytest.approx(manual)
    with pytest.raises(ValueError, match=r"y must be a torch\.Tensor of shape"):
        evaluate(model, X, y[:5])


def test_recalibrate_bn_repairs_stale_statistics(task: Task) -> None:
    model = copy.deepcopy(task.model)
    base = evaluate(model, *task.val)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.01)
    assert evaluate(model, *task.val) < base - 20
    recalibrate_bn(model, task.train[0])
    assert not model.training
    assert evaluate(model, *task.val) >= base - 2.0
    for key, value in weights.items():
        if "num_batches" not in key:
            assert torch.equal(model.state_dict()[key], value), key
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_distill_recovers_perturbed_student_deterministically(task: Task) -> None:
    teacher = task.model
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _perturbed(teacher, 0.6)
    before = evaluate(student, *task.val)
    X, y = task.train
    a = distill(copy.deepcopy(student), teacher, X, y, steps=30, seed=1)
    b = distill(copy.deepcopy(student), teacher, X, y, steps=30, seed=1)
    after = evaluate(a, *task.val)
    assert after >= before + 5.0 or after >= evaluate(teacher, *task.val) - 3.0
    assert not a.training
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key  # teacher untouched
    # labels are optional: pure distillation also works
    c = distill(copy.deepcopy(student), teacher, X, None, steps=30, seed=1, temperature=2.0)
    assert evaluate(c, *task.val) >= before


def test_recover_keeps_accuracy_of_unchanged_model(task: Task) -> None:
    base = evaluate(task.model, *task.val)
    student = recover(copy.deepcopy(task.model), task.model, task, steps=30, seed=0)
    assert evaluate(student, *task.val) >= base - 2.0
    assert task.model in _TEACHER_LOGITS  # teacher logits cached for the next trial
    again = recover(copy.deepcopy(task.model), task.model, task, steps=0)
    assert evaluate(again, *task.val) >= base - 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"label_weight": 1.5}, r"label_weight must be in \[0, 1\]"),
        ({"optimizer": "lbfgs"}, "optimizer must be 'adam' or 'sgd'"),
        ({"steps": -1}, "steps must be >= 0"),
    ],
)
def test_distill_checks_arguments(task: Task, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        distill(copy.deepcopy(task.model), task.model, *task.train, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("dynamic", [True, False])
def test_onnx_accuracy_matches_torch(task: Task, tmp_path: Path, dynamic: bool) -> None:
    import warnings

    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            task.model,
            (task.example_input,),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}} if dynamic else None,
        )
    X, y = task.val
    top1_torch = evaluate(task.model, X, y)
    assert evaluate_onnx(path, X, y, batch_size=100) == pytest.approx(top1_torch, abs=0.3)
    with torch.no_grad():
        expected = task.model(X[:7]).numpy()
    got = onnx_logits(path.read_bytes(), X[:7].numpy())
    assert got.shape == (7, 10)
    assert abs(got - expected).max() < 1e-3
    with pytest.raises(ValueError, match="rows but y has"):
        evaluate_onnx(path, X[:4], y[:3])


@pytest.mark.slow
def test_mnist_tasks_reach_target_accuracy(tmp_path_factory: pytest.TempPathFactory) -> None:
    for _ in bundled_home(tmp_path_factory):
        resnet = get_task("mnist-resnet")
        assert resnet.example_input.shape == (1, 1, 28, 28)
        assert evaluate(resnet.model, *resnet.val) >= 98.0
        mbv2 = get_task("mnist-mobilenetv2")
        assert evaluate(mbv2.model, *mbv2.val) >= 97.0
