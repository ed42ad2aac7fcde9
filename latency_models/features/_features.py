"""Graph features: the kernels onnxruntime will actually run, and graph totals.

A predictor sees a graph as the list of kernels the CPU runtime executes after its graph
optimisations, not as the ONNX nodes the exporter wrote. The fusions onnxruntime makes
are simulated on the original graph (with ONNX shape inference) instead of building an
inference session, which keeps featurization deterministic, free of the runtime's
layout ops (NCHWc) and fast enough for a search (milliseconds per graph):

- constant subgraphs (weight ``DequantizeLinear``, ``Shape`` of static tensors) fold away;
  ``Identity`` and ``Dropout`` disappear;
- QDQ: an op whose activation inputs come from ``DequantizeLinear`` and whose output goes to
  ``QuantizeLinear`` runs as one integer kernel (``QLinearConv``, ``QGemm``,
  ``QLinearMatMul``, ``QLinearAdd``...); the surrounding Q/DQ pairs vanish, and a
  quantized ``Relu``/``Clip`` is absorbed into the quantization range;
- fp32: ``Conv`` absorbs a following ``BatchNormalization``, activation
  (``Relu``, ``Clip``, ``Sigmoid``, ``Tanh``, ``LeakyRelu``, ``HardSigmoid``) and a residual
  ``Add`` (onnxruntime's NCHWc conv with sum); ``MatMul`` + bias ``Add`` is one ``Gemm``,
  which also absorbs an activation.

Bump :data:`FEATURE_VERSION` whenever any of this changes what a graph maps to: saved
predictors and stored features carry it and are refused or recomputed on mismatch.
"""

from __future__ import annotations

from latency_models._graph import GraphLike, load_graph
from latency_models.features._fuser import Fuser
from latency_models.features._kernels import (
    COMPUTE_KINDS,
    FEATURE_VERSION,
    KINDS,
    NCHWC_ALIGN,
    GraphFeatures,
    KernelFeatures,
    graph_totals,
)
from latency_models.measurement._host import NCHWC_BLOCKS, host_nchwc_block

__all__ = [
    "COMPUTE_KINDS",
    "FEATURE_VERSION",
    "KINDS",
    "NCHWC_ALIGN",
    "GraphFeatures",
    "KernelFeatures",
    "graph_features",
    "graph_totals",
]


def graph_features(
    graph: GraphLike | GraphFeatures, *, batch_size: int = 1, nchwc_block: int | None = None
) -> GraphFeatures:
    """The kernels onnxruntime will run for ``graph`` and the graph totals.

    Deterministic and torch-free; a ResNet-18 takes a few tens of milliseconds.

    Args:
        graph: A ModelProto, ``.onnx`` path or serialized bytes (features pass through).
        batch_size: Value for symbolic (dynamic) leading dims; other symbolic dims become 1.
        nchwc_block: Channel block of onnxruntime's NCHWc layout on the CPU that will run
            the graph, 8 (AVX2) or 16 (AVX-512F); default this machine's
            (:func:`~latency_models.measurement._host.host_nchwc_block`). Recorded in the totals.

    Returns:
        The graph's :class:`GraphFeatures`.

    Raises:
        ValueError: ``graph`` is not a valid ONNX model, or ``nchwc_block`` is not 8 or 16.
    """
    if isinstance(graph, GraphFeatures):
        return graph
    block = host_nchwc_block() if nchwc_block is None else nchwc_block
    if block not in NCHWC_BLOCKS:
        raise ValueError(
            f"nchwc_block must be one of {list(NCHWC_BLOCKS)}, got {nchwc_block!r}. Use 16 for "
            f"a CPU with AVX-512F, 8 for one with AVX2 only, or None for this machine's."
        )
    model = load_graph(graph)
    return Fuser(model, batch_size, block).run()
