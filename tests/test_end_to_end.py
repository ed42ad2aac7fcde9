"""The whole loop on a bundled task: profile a new device, search, verify, export, run."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _task_fixtures import bundled_home  # tests/nas, on the path through tests/conftest.py

import nas


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from bundled_home(tmp_path_factory)


def test_search_on_a_new_device_end_to_end(home: Path, tmp_path: Path) -> None:
    from latency_models import DeviceSpec, add_device, device_predictor

    nas.get_task("digits-resnet")  # trained once per test run, shared with other tests
    add_device(DeviceSpec(name="e2e-cpu", threads=1, description="end-to-end test"), replace=True)
    run = nas.search(
        "digits-resnet",
        device="e2e-cpu",  # no predictor yet: the search profiles it first
        objectives=("accuracy", "latency_ms", "memory_mb"),
        budget="memory_mb=0.06,accuracy_drop=20",
        n_trials=5,
        run_dir=tmp_path / "run",
        seed=0,
        recovery_steps=20,
        profile_minutes=0.2,
    )
    saved = device_predictor("e2e-cpu")  # profiled and saved: it predicts a real graph
    from latency_models.profiling._check import conv_stack

    assert saved.predict([conv_stack(8, 8, 1)])[0] > 0
    assert (run.path / "settings.json").is_file() and (run.path / "study.db").is_file()
    assert run.user_attrs["task"] == "digits-resnet" and run.user_attrs["device"] == "e2e-cpu"
    base = run.base
    assert base["accuracy"] > 80 and base["measured"]["latency_ms"] > 0
    assert len(run.completed_trials()) + len(run.failed_trials()) == 5
    for trial in run.completed_trials():
        attrs = trial.user_attrs
        predicted = attrs["predicted"]
        assert predicted["latency_ms"] > 0 and predicted["memory_mb"] > 0
        if attrs["rejected_before_training"]:  # never trained: never measured
            assert attrs["cost_source"] == "predicted"
            assert trial.values[1] == predicted["latency_ms"]
        else:  # trained: its latency is the one measured on the device
            assert attrs["cost_source"] == "measured"
            assert trial.values[1] == attrs["measured"]["latency_ms"] > 0
    front = run.pareto_trials()
    assert front, run.summary()
    for trial in front:
        assert run.is_feasible(trial)
        assert trial.user_attrs["measured"]["latency_ms"] > 0  # verified on the device
    assert run.user_attrs["verification"]["n_trials"] == len(front)

    import onnxruntime as ort

    result = nas.export(run, out_dir=tmp_path / "model", finetune_steps=10)
    out = Path(getattr(result, "out_dir", tmp_path / "model"))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    X, _ = nas.get_task("digits-resnet").val
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: X[:1].numpy()})[0]
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
