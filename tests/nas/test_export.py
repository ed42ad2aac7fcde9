"""Exporting a trial: verified ONNX + torch files, atomic writes, clear refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _front_data import make_fake_run
from _real_run import real_run

import nas
from nas import RunError, UsageError
from nas.results._export import ExportError, candidates, export, load_exported
from nas.results._pareto import read_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for run_dir, _home in real_run(tmp_path_factory):
        yield run_dir


@pytest.fixture(scope="module")
def val_npy(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    task = nas.load_task("digits-resnet")
    X, y = task.val
    folder = tmp_path_factory.mktemp("val")
    np.save(folder / "X.npy", X.numpy())
    np.save(folder / "y.npy", y.numpy())
    return folder / "X.npy", folder / "y.npy"


_ONNX_ONLY = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnxruntime as ort
    model, xp, yp = sys.argv[1:4]
    X, y = np.load(xp).astype(np.float32), np.load(yp)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or 256
    logits = np.concatenate(
        [sess.run(None, {inp.name: X[i : i + step]})[0] for i in range(0, len(X), step)]
    )
    heavy = sorted({"torch", "nas", "search_spaces", "latency_models"} & set(sys.modules))
    print(json.dumps({"top1": float((logits.argmax(1) == y).mean() * 100), "heavy": heavy}))
    """
)


def test_export_best_trial_runs_in_plain_onnxruntime(
    run: Path, val_npy: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "best"
    result = export(run, out_dir=out, finetune_steps=20, measure_seconds=0.3)
    best = candidates(read_run(run))[0][0]
    assert result.trial == best.number
    assert best.measured["latency_ms"] > 0  # chosen by its latency measured in the search
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert "most accurate trial whose measured cost meets the budget" in report["selection"]
    assert report["measured_in_search"]["latency_ms"] == best.measured["latency_ms"]
    assert report["verification"]["passed"]
    for name, info in report["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"]
    assert report["measured"]["latency_ms"] > 0
    assert report["measured"]["energy_source"] in ("estimated", "rapl", "nvml")
    assert set(report["predicted"]) >= {"latency_ms", "memory_mb"}
    assert {"onnxruntime", "torch", "hwnas", "python"} <= set(report["versions"])
    assert report["device"]["name"] == "report-cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _ONNX_ONLY, str(out / "model.onnx"), *map(str, val_npy)],
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(proc.stdout)
    assert fresh["heavy"] == []
    assert abs(fresh["top1"] - report["accuracy"]["onnx_top1"]) <= 0.5


def _fp32_trial(run: Path) -> int:
    res = read_run(run)
    fp32 = [r.number for r in res.rows if all(b == 32 for b in r.config["bits"].values())]
    assert fp32, "the warm start's first config is fp32"
    return fp32[0]


def test_a_relative_budget_is_judged_side_by_side_with_the_base() -> None:
    from types import SimpleNamespace

    from nas.results._export_files import _budget_met, budget_check

    stored = {"latency_ms": "0.9x", "energy_mj": 0.5, "memory_mb": 1.0}
    run = SimpleNamespace(
        budget={"latency_ms": 0.02, "energy_mj": 0.5, "memory_mb": 1.0},
        setting=lambda key, default=None: stored if key == "budget" else default,
    )
    # the machine slowed since the search: over the absolute 0.02 ms, yet 0.85x of the base
    side = {"rounds": 5, "base": {"latency_ms": 0.03}, "export": {"latency_ms": 0.0255}}
    measured = {"latency_ms": 0.026, "energy_mj": 0.4, "memory_mb": 0.5}
    checks = budget_check(measured, run, side)  # type: ignore[arg-type]
    assert set(checks) == {"latency_ms", "energy_mj"}  # memory is computed, not measured
    assert checks["latency_ms"]["judged"] == "side by side with the base model"
    assert checks["latency_ms"]["ratio"] == pytest.approx(0.85)
    assert checks["latency_ms"]["met"] is True and checks["latency_ms"]["limit"] == "0.9x"
    assert checks["energy_mj"] == {
        "judged": "against the limit", "export": 0.4, "limit": 0.5, "met": True
    }  # fmt: skip
    assert _budget_met(checks) is True
    # without the side-by-side measurement, the absolute limit decides
    alone = budget_check(measured, run, None)  # type: ignore[arg-type]
    assert alone["latency_ms"]["met"] is False and _budget_met(alone) is False
    no_energy = budget_check({"latency_ms": 0.01}, run, None)  # type: ignore[arg-type]
    assert _budget_met(no_energy) is None


def test_fp32_export_rebuilds_with_hwnas(run: Path, tmp_path: Path) -> None:
    import torch

    from nas.tasks._onnx_eval import onnx_logits

    out = tmp_path / "fp32"
    export(run, _fp32_trial(run), out_dir=out, finetune_steps=10, measure_seconds=0.2)
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["mode"] == "fp32"
    assert report["verification"]["disagreements_outside_ties"] == 0
    module = load_exported(out)
    X, _ = nas.load_task("digits-resnet").val
    with torch.no_grad():
        torch_out = module(X).numpy()
    onnx_out = onnx_logits(out / "model.onnx", X)
    np.testing.assert_allclose(torch_out, onnx_out, atol=1e-4, rtol=1e-4)


def test_refusals_and_nothing_half_written(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"already exists; pass --force"):
        export(run, out_dir=out)
    with pytest.raises(RunError, match="trial 99 is not a finished trial"):
        export(run, 99, out_dir=tmp_path / "x")

    import nas.results._export as ex

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("device unplugged")

    monkeypatch.setattr(ex, "measure_graph", boom)
    with pytest.raises(RuntimeError, match="device unplugged"):
        export(run, out_dir=out, force=True, finetune_steps=0)
    assert (out / "keep.txt").read_text() == "mine"  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temp folder left


def test_failed_trial_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = make_fake_run(tmp_path / "fake", n=3, n_failed=1)
    with pytest.raises(RunError, match=r"trial 3 of run .* failed"):
        export(fake, 3, out_dir=tmp_path / "out")
    from nas.cli import main

    assert main(["export", str(fake), "--trial", "7", "--out", str(tmp_path / "o")]) == 1
    assert "trial 7 is not a finished trial" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_export_writes_the_runtimes_files_verified_there(run: Path, tmp_path: Path) -> None:
    from latency_models.runtimes import get_runtime

    if not get_runtime("openvino").available():
        pytest.skip("openvino is not installed (pip install 'hwnas[openvino]')")
    out = tmp_path / "ov"
    export(run, _fp32_trial(run), out_dir=out, finetune_steps=0, measure_seconds=0.2,
           runtime="openvino")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["runtime"]["name"] == "openvino"
    assert report["runtime"]["verification"]["ok"] is True
    assert {"model.xml", "model.bin"} <= {p.name for p in out.iterdir()}
    with pytest.raises(ExportError, match="cannot export for nope: unknown runtime"):
        export(run, _fp32_trial(run), out_dir=tmp_path / "x", finetune_steps=0,
               measure_seconds=0.2, runtime="nope")  # fmt: skip
    assert not (tmp_path / "x").exists()
