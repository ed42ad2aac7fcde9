"""``hwnas demo`` end to end on the tiny digits task (the MNIST default runs in the README)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _task_fixtures import bundled_home

from nas.cli import main


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from bundled_home(tmp_path_factory)


def test_demo_runs_the_whole_loop(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latency_models import DeviceSpec, add_device

    # a device of its own: the demo profiles it (no predictor yet) without touching local-cpu
    add_device(DeviceSpec(name="demo-cpu", threads=1, description="demo test"), replace=True)
    run = tmp_path / "demo-run"
    rc = main(
        [
            "demo",
            "--task", "digits-resnet",
            "--device", "demo-cpu",
            "--trials", "5",
            "--recovery-steps", "10",
            "--finetune-steps", "20",
            "--profile-minutes", "0.3",
            "--budget-fraction", "0.9",
            "--run", str(run),
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "Pareto front of" in out
    assert "base model:" in out and "ms measured on demo-cpu" in out
    assert (run / "study.db").is_file()
    settings = json.loads((run / "settings.json").read_text())
    assert settings["task"] == "digits-resnet"
    assert "(every trained candidate measured on the device)" in out
    # an export is kept only where it meets the budget side by side with the base
    assert "misses the budget" not in out
    if (run / "export").exists():
        assert "x faster (measured, side by side; " in out
        assert "meets the budget" in out or "no latency budget" in out
        report = json.loads((run / "export" / "report.json").read_text())
        assert report["measured"]["latency_ms"] > 0
        assert report["budget_met"] is not False
        if "latency_ms" in report["budget"]:  # a relative limit: judged as the demo judged it
            check = report["budget_check"]["latency_ms"]
            assert check["judged"] == "side by side with the base model" and check["met"]
            assert f"budget latency_ms <= {check['limit']}: met (" in out
    else:
        assert "nothing was exported" in out


def test_demo_rejects_bad_budget_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--budget-fraction", "1.5"]) == 1
    err = capsys.readouterr().err
    assert "--budget-fraction must be in (0, 1), got 1.5" in err


def test_demo_unknown_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--task", "mnist-resnt", "--run", "unused"]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'mnist-resnt'" in err and "Did you mean 'mnist-resnet'" in err
