"""The noise floor of a device: fixed reference graphs, each measured twice.

A predictor's error on a device cannot be read below the spread of the device's own
measurements; :func:`check_device` measures it. The reference graphs are built with
``onnx.helper`` (no torch) from a fixed seed, so every device sees the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latency_models.devices import DeviceSpec, get_device
from latency_models.measurement._measure import Measurement, measure

if TYPE_CHECKING:
    import onnx


def _model(nodes: list[Any], inits: list[Any], name: str, shape: list[int]) -> onnx.ModelProto:
    """A checked opset-17 model of ``nodes`` from float ``input`` to ``output``, both ``shape``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_stack(channels: int, size: int, layers: int, *, seed: int = 0) -> onnx.ModelProto:
    """A stack of 3x3 Conv+ReLU layers on a ``1xchannelsxsizexsize`` float input.

    About ``9·channels²·size²·layers`` multiply-adds.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    std = float(np.sqrt(2.0 / (9 * channels)))
    for i in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) * std).astype(np.float32)
        b = np.zeros(channels, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1])
        )
        out = "output" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    return _model(
        nodes, inits, f"conv_stack_c{channels}_s{size}_l{layers}", [1, channels, size, size]
    )


def depthwise_stream(channels: int, size: int, layers: int, *, seed: int = 0) -> onnx.ModelProto:
    """A stack of 3x3 depthwise Conv+ReLU layers on a ``1xchannelsxsizexsize`` float input.

    Memory-bound: 9 multiply-adds per element moved, and each layer's input and output
    (``channels·size²·4`` bytes each) are sized to overflow the last-level cache, so every
    run streams them from memory. It shows the noise that other tenants of a shared cache
    or memory bus add; the compute-bound convs do not feel it.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    for i in range(layers):
        w = (rng.standard_normal((channels, 1, 3, 3)) / 3).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], group=channels)
        )
        out = "output" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    return _model(
        nodes, inits, f"depthwise_stream_c{channels}_s{size}_l{layers}", [1, channels, size, size]
    )


def mlp(width: int, layers: int, *, seed: int = 0) -> onnx.ModelProto:
    """A stack of ``widthxwidth`` MatMul+Relu layers on a ``1xwidth`` input (sub-ms graph)."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) * np.sqrt(2.0 / width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "output" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    return _model(nodes, inits, f"mlp_w{width}_l{layers}", [1, width])


REFERENCE_GRAPHS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp-0.1ms": lambda: mlp(512, 4),
    "conv-1ms": lambda: conv_stack(32, 28, 8),
    "conv-30ms": lambda: conv_stack(64, 56, 9),
    "memory-20ms": lambda: depthwise_stream(128, 224, 3),
}
"""Reference graphs by name; the name gives their rough latency on one x86 core.

The first three are compute-bound; ``memory-20ms`` streams 100 MB a run through the memory
bus and shows what a shared cache or memory bus adds. Measured on a 2-vCPU VM
(``local-cpu``, 2026-12-02): 0.08, 1.1, 19 and 18.7 ms."""


@dataclass(frozen=True)
class CheckResult:
    """Run-to-run spread of one reference graph.

    Attributes:
        graph: Reference graph name.
        medians_ms: Median latency of each repeat (ms), each in a fresh session.
        spread_pct: (max - min) / mean of the medians, in %.
        cv: Worst within-repeat coefficient of variation.
    """

    graph: str
    medians_ms: tuple[float, ...]
    spread_pct: float
    cv: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "graph": self.graph,
            "medians_ms": list(self.medians_ms),
            "spread_pct": self.spread_pct,
            "cv": self.cv,
        }


def check_device(
    device: DeviceSpec | str,
    *,
    repeats: int = 2,
    graphs: Sequence[str] | None = None,
    **measure_options: Any,
) -> list[CheckResult]:
    """Measure each reference graph ``repeats`` times in fresh sessions; report the spread.

    Args:
        device: Device name or spec.
        repeats: Measurements per graph (>= 2).
        graphs: Names from :data:`REFERENCE_GRAPHS` (default all).
        **measure_options: Passed to :func:`latency_models.measure` (e.g. ``max_seconds``).

    Raises:
        ValueError: ``repeats`` < 2 or an unknown graph name.
    """
    if repeats < 2:
        raise ValueError(f"check_device needs repeats >= 2 to show a spread, got {repeats}.")
    names = list(REFERENCE_GRAPHS) if graphs is None else list(graphs)
    unknown = [n for n in names if n not in REFERENCE_GRAPHS]
    if unknown:
        raise ValueError(f"unknown reference graphs {unknown}; valid: {list(REFERENCE_GRAPHS)}.")
    spec = get_device(device)
    results = []
    for name in names:
        data = REFERENCE_GRAPHS[name]().SerializeToString()
        runs: list[Measurement] = [measure(data, spec, **measure_options) for _ in range(repeats)]
        medians = tuple(m.latency_ms for m in runs)
        mean = sum(medians) / len(medians)
        spread = (max(medians) - min(medians)) / mean * 100 if mean > 0 else 0.0
        results.append(CheckResult(name, medians, spread, max(m.cv for m in runs)))
    return results
