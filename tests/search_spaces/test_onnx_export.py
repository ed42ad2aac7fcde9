"""export_onnx: graphs run in onnxruntime, shapes follow the config, int8 runs as int8 kernels."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import Built, built
from hypothesis import HealthCheck, given, settings
from onnx import numpy_helper
from strategies import space_configs
from torch import nn

from search_spaces import CompressionConfig, ExportedGraph, export_onnx

_SETTINGS = settings(
    max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(graph: ExportedGraph, x: torch.Tensor) -> np.ndarray:
    return _session(graph.path).run(None, {"input": x.numpy()})[0]


def _weight_out_dims(path: Path) -> dict[str, int]:
    """Node name -> output dim of its weight (through DequantizeLinear where quantized)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    dims = {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMulNBits":
            dims[node.name] = attrs["N"]
            continue
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        name = node.input[1]
        if name in producers and producers[name].op_type == "DequantizeLinear":
            name = producers[name].input[0]
        shape = inits[name]
        transposed = node.op_type == "MatMul" or (
            node.op_type == "Gemm" and not attrs.get("transB")
        )
        dims[node.name] = shape[-1] if transposed else shape[0]
    return dims


def _torch_out_dims(model: nn.Module, layer: str) -> list[int]:
    mod = model.get_submodule(layer)
    parts = list(mod) if isinstance(mod, nn.Sequential) else [mod]
    return [int(p.weight.shape[0]) for p in parts]


def _check_shapes(b: Built, config: CompressionConfig, model: nn.Module, graph: ExportedGraph):
    onnx_dims = _weight_out_dims(graph.path)
    inside_dropped = [
        k for k in b.space.bits if any(k.startswith(d + ".") for d in config.dropped_blocks)
    ]
    for layer in set(b.space.bits) - set(inside_dropped):
        expected = _torch_out_dims(model, layer)
        got = [onnx_dims[n] for n in graph.layer_nodes[layer] if n in onnx_dims]
        assert got == expected, layer
    for name, group in b.space.groups.items():
        for layer in set(group.layers) - set(inside_dropped):
            assert _torch_out_dims(model, layer)[-1] == config.widths[name], layer
    for layer, rank in b.space.effective_ranks(model).items():
        assert rank == config.ranks[layer]
        assert _torch_out_dims(model, layer)[0] == rank


def _check_config(b: Built, config: CompressionConfig, tmp: Path) -> None:
    model = b.space.apply(b.model, config)
    assert sum(p.numel() for p in model.parameters()) <= sum(
        p.numel() for p in b.model.parameters()
    )
    graph = export_onnx(model, config, b.x, tmp / "m.onnx", calibration=b.batch)
    assert _run(graph, b.x).shape == tuple(b.model(b.x).shape)
    _check_shapes(b, config, model, graph)


@_SETTINGS
@given(config=space_configs(built("resnet18").space))
def test_any_resnet_config_applies_exports_and_runs(
    config: CompressionConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _check_config(built("resnet18"), config, tmp_path_factory.mktemp("r"))


@settings(_SETTINGS, max_examples=2)
@given(config=space_configs(built("mobilenetv2").space))
def test_any_mobilenet_config_applies_exports_and_runs(
    config: CompressionConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _check_config(built("mobilenetv2"), config, tmp_path_factory.mktemp("m"))


@pytest.mark.parametrize("name", ["squeezenet", "shufflenetv2", "vgg"])
def test_smallest_config_exports_with_config_shapes(name: str, tmp_path: Path) -> None:
    b = built(name)
    _check_config(b, b.space.smallest(), tmp_path)


def test_fp32_export_matches_torch(tmp_path: Path) -> None:
    b = built("resnet18")
    config = b.space.uniform(width=0.5)
    model = b.space.apply(b.model, config)
    graph = export_onnx(model, config, b.x, tmp_path / "fp32.onnx")
    np.testing.assert_allclose(_run(graph, b.x), model(b.x).detach().numpy(), atol=1e-5)
    assert not list(tmp_path.glob("*.data")) and graph.export_s > 0


def _kernels(graph: ExportedGraph, tmp: Path) -> Counter[str]:
    _session(graph.path, tmp / "optimized.onnx")
    return Counter(n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node)


def test_int8_layers_become_integer_kernels_and_fp32_do_not(tmp_path: Path) -> None:
    b = built("resnet18")
    layers = list(b.space.bits)
    bits = {k: 8 if i % 2 else 32 for i, k in enumerate(layers)}  # fc (last, index 20) fp32
    config = CompressionConfig(bits=bits)
    model = b.space.apply(b.model, config)
    graph = export_onnx(model, config, b.x, tmp_path / "mixed.onnx", calibration=b.batch)
    kernels = _kernels(graph, tmp_path)
    assert kernels["QLinearConv"] == sum(b == 8 for b in bits.values())
    assert kernels["Conv"] + kernels["FusedConv"] == sum(b == 32 for b in bits.values()) - 1
    assert kernels["Gemm"] + kernels["FusedGemm"] == 1 and kernels["QGemm"] == 0


def test_all_int8_is_all_integer_and_close(tmp_path: Path) -> None:
    b = built("resnet18")
    config = b.space.uniform(bits=8)
    graph = export_onnx(b.model, config, b.x, tmp_path / "int8.onnx", calibration=b.batch)
    kernels = _kernels(graph, tmp_path)
    assert kernels["QLinearConv"] == 20 and kernels["QGemm"] == 1
    assert kernels["Conv"] == kernels["FusedConv"] == kernels["Gemm"] == 0
    ref = b.model(b.x).detach().numpy()
    assert np.abs(_run(graph, b.x) - ref).max() < 0.1 * np.abs(ref).max()


def test_int4_linear_uses_matmul_nbits(tmp_path: Path) -> None:
    b = built("vgg")
    config = CompressionConfig(bits={"classifier.0": 4, "classifier.3": 4, "features.0": 8})
    graph = export_onnx(b.model, config, b.x, tmp_path / "int4.onnx", calibration=b.batch)
    kernels = _kernels(graph, tmp_path)
    assert kernels["MatMulNBits"] == 2 and kernels["QLinearConv"] == 1
    assert all(n.endswith(("MatMul_Q4", "Add")) for n in graph.layer_nodes["classifier.0"])


def test_missing_calibration_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = built("squeezenet")
    with caplog.at_level(logging.WARNING, logger="search_spaces"):
        export_onnx(b.model, b.space.uniform(bits=8), b.x, tmp_path / "q.onnx")
    assert "no calibration data" in caplog.text
