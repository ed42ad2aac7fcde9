"""Contract tests of every device runtime in latency_models.runtimes that imports here."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest

from latency_models import runtimes
from latency_models.runtimes import (
    RUNTIMES,
    ConversionError,
    RuntimeNotInstalledError,
    get_runtime,
    runtime_names,
    verify,
)

SUFFIXES = {
    "onnxruntime": [".onnx"],
    "openvino": [".xml", ".bin"],
    "ncnn": [".param", ".bin"],
    "mnn": [".mnn"],
    "tvm": [".so"],
}
# What each runtime makes of a QDQ int8 graph: the precision it runs, or the error.
INT8_OUTCOME = {
    "onnxruntime": "int8",
    "openvino": "int8",
    "mnn": "int8",
    "ncnn": ConversionError,
    "tvm": "fp32",  # Q/DQ import as float ops
}
MODULES = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "ncnn": "ncnn",
    "mnn": "MNN",
    "tvm": "tvm",
}


def _installed(name: str) -> object:
    rt = RUNTIMES[name]
    reason = f"runtime {name!r} is not installed (pip install 'hwnas[{rt.extra}]')"
    return pytest.param(name, marks=pytest.mark.skipif(not rt.available(), reason=reason))


INSTALLED = [_installed(name) for name in sorted(RUNTIMES)]
INSTALLED_INT8 = [_installed(name) for name in sorted(RUNTIMES) if INT8_OUTCOME[name] == "int8"]


def _tiny_net() -> object:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.dw = nn.Sequential(
                nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.stem(x)
            y = torch.relu(y + self.pw(self.dw(y)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    net = Net().eval()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def fp32_model() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.onnx.export(
        _tiny_net(),
        (torch.randn(1, 3, 16, 16),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["logits"],
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def int8_model(fp32_model: bytes, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter(
                [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.data, None)

    folder = tmp_path_factory.mktemp("qdq")
    (folder / "fp32.onnx").write_bytes(fp32_model)
    quantize_static(
        str(folder / "fp32.onnx"),
        str(folder / "int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return (folder / "int8.onnx").read_bytes()


def _graph(op: str, domain: str = "") -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


def _reference(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", INSTALLED)
def test_convert_writes_the_runtime_files(name: str, fp32_model: bytes, tmp_path) -> None:
    if name == "tvm" and shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("tvm's export_library needs a C compiler")
    files = get_runtime(name).convert(fp32_model, tmp_path, name="net")
    assert [f.suffix for f in files] == SUFFIXES[name]
    assert all(f.parent == tmp_path and f.name.startswith("net") for f in files)
    assert all(f.stat().st_size > 0 for f in files)


@pytest.mark.parametrize("name", INSTALLED)
def test_prepare_runs_and_infer_matches_onnxruntime(name: str, fp32_model: bytes) -> None:
    with get_runtime(name).prepare(fp32_model, threads=1, seed=3) as prepared:
        prepared.run()
        assert list(prepared.inputs) == ["x"]
        assert prepared.inputs["x"].shape == (1, 3, 16, 16)
        assert prepared.precision == "fp32"
        got = prepared.infer(prepared.inputs)
    want = _reference(fp32_model, prepared.inputs)
    assert [g.shape for g in got] == [w.shape for w in want] == [(1, 10)]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", INSTALLED)
def test_prepare_with_two_threads_runs(name: str, fp32_model: bytes) -> None:
    with get_runtime(name).prepare(fp32_model, threads=2) as prepared:
        prepared.run()


@pytest.mark.parametrize("name", INSTALLED)
def test_verify_fp32_is_ok(name: str, fp32_model: bytes) -> None:
    report = verify(fp32_model, name, n_samples=2)
    assert report["ok"], report
    assert report["precision"] == "fp32"
    assert report["max_rel_diff"] < 1e-3
    assert report["top1_agreement"] == 1.0


@pytest.mark.parametrize("name", INSTALLED)
def test_qdq_graph_runs_int8_or_is_refused(name: str, int8_model: bytes) -> None:
    rt = get_runtime(name)
    outcome = INT8_OUTCOME[name]
    assert rt.int8 == (outcome == "int8")
    if outcome is ConversionError:
        with pytest.raises(ConversionError, match="QuantizeLinear"):
            rt.prepare(int8_model, threads=1)
        return
    with rt.prepare(int8_model, threads=1) as prepared:
        prepared.run()
        assert prepared.precision == outcome
    report = verify(int8_model, name, n_samples=8)
    assert report["ok"], report
    assert report["top1_agreement"] >= 0.75


@pytest.mark.parametrize("name", INSTALLED_INT8)
def test_int8_kernels_are_reported(name: str, int8_model: bytes) -> None:
    with get_runtime(name).prepare(int8_model, threads=1) as prepared:
        kernels = prepared.kernels
    assert kernels
    if name == "onnxruntime":
        assert any(k["type"] == "QLinearConv" for k in kernels)
    else:  # openvino: u8/i8 runtime precision; mnn: DT_INT8 ops
        convs = [k for k in kernels if k["type"].startswith("Convolution")]
        assert convs and all(k["precision"] in ("u8", "i8", "int8") for k in convs)


@pytest.mark.parametrize("name", INSTALLED)
def test_a_graph_the_converter_refuses_raises_conversion_error(name: str) -> None:
    with pytest.raises(ConversionError, match="NoSuchOp"):
        get_runtime(name).prepare(_graph("NoSuchOp", "com.example"), threads=1)


def test_ncnn_names_the_layers_pnnx_left_unconverted() -> None:
    if not RUNTIMES["ncnn"].available():
        pytest.skip("runtime 'ncnn' is not installed")
    with pytest.raises(ConversionError, match="Hardmax"):
        get_runtime("ncnn").prepare(_graph("Hardmax"), threads=1)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_missing_runtime_names_its_extra(name: str, monkeypatch, fp32_model: bytes) -> None:
    monkeypatch.setitem(sys.modules, MODULES[name], None)
    rt = get_runtime(name)
    assert not rt.available()
    with pytest.raises(RuntimeNotInstalledError, match=rf'pip install "hwnas\[{rt.extra}\]"'):
        rt.prepare(fp32_model, threads=1)


def test_unknown_runtime_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime 'nope'; known: \['mnn', 'ncnn'"):
        get_runtime("nope")
    with pytest.raises(ValueError, match="Did you mean 'openvino'"):
        get_runtime("openvno")


@pytest.mark.parametrize("threads", [0, 1.5])
def test_bad_thread_counts_are_refused(threads: float, fp32_model: bytes) -> None:
    with pytest.raises(ValueError, match="threads and batch_size must be integers >= 1"):
        get_runtime("onnxruntime").prepare(fp32_model, threads=threads)  # type: ignore[arg-type]


def test_registry_and_public_names() -> None:
    assert runtime_names() == sorted(RUNTIMES) == sorted(MODULES)
    assert all(hasattr(runtimes, name) for name in runtimes.__all__)
    assert all(RUNTIMES[n].name == n and RUNTIMES[n].description for n in RUNTIMES)


def test_importing_the_package_imports_no_runtime_and_no_torch() -> None:
    code = (
        "import sys, latency_models.runtimes as r\n"
        "from latency_models.runtimes import _base, _mnn, _ncnn, _onnx_io, _onnxruntime\n"
        "from latency_models.runtimes import _openvino, _tvm, _verify\n"
        "heavy = ('torch', 'openvino', 'ncnn', 'MNN', '_tools', 'tvm', 'onnxruntime', 'pnnx')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
