"""How an exported ONNX graph maps back to the model's layers.

The TorchScript exporter names each node after its module scope
(``/layer1/layer1.0/conv1/Conv``); that is how each layer is mapped to its nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "input"
_LAYER_OPS = {"Conv", "Gemm", "MatMul", "Add", "MatMulNBits"}


def _module_of(node_name: str, modules: set[str]) -> str:
    """Module path of a TorchScript-exported node name such as ``/layer1/layer1.0/conv1/Conv``.

    Each scope segment is a path relative to an ancestor, and may repeat that ancestor's last
    components (``/features/features.4/conv/conv.1/conv.1.0/Conv``); try the overlaps first.
    """
    path: list[str] = []
    for seg in node_name.split("/")[1:-1]:
        parts = seg.split(".")
        overlaps = [k for k in range(len(parts), 0, -1) if path[-k:] == parts[:k]]
        candidates = [path + parts[k:] for k in overlaps] + [path + parts, parts]
        path = next((c for c in candidates if ".".join(c) in modules), path)
    return ".".join(path)


def layer_nodes(
    graph: onnx.GraphProto, model: nn.Module, layers: Iterable[str]
) -> dict[str, list[str]]:
    """Map each Conv2d/Linear layer (or factorized layer) path to its ONNX node names."""
    modules = {name for name, _ in model.named_modules() if name}
    known = sorted(layers, key=len, reverse=True)
    compute = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    out: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        path = _module_of(node.name, modules)
        if path not in compute:
            continue
        layer = next((k for k in known if path == k or path.startswith(k + ".")), path)
        out.setdefault(layer, []).append(node.name)
    return out
