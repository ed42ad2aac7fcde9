"""Runtime-agnostic op-level features of an ONNX graph: what it computes, not how it runs.

Other runtimes than onnxruntime on x86 fuse and lay out kernels differently, so these
features only count what the graph itself asks for: nodes per op kind, multiply-adds and
bytes moved per kind, totals, and the live graph's depth and width.

Only *live* nodes count: a node is live when it lies on a path from a graph input to a
graph output. Nodes that depend only on constants (a runtime folds them) are dead; their
number and MACs are features of their own, because a cell cut off from the input makes a
whole network fold to a constant and measure near zero. Nodes that depend on the input but
whose results reach no output are *unused*, and counted apart again: whether a runtime
drops them is its own choice (onnxruntime runs them; a cell with two such 3x3
convolutions measured 3.5x what the live nodes alone predicted).

Units: MACs in millions (``mmacs_*``), bytes in megabytes of 1e6 (``mbytes_*``). Bytes moved
by a node are its inputs, outputs and weights at their element sizes. Unknown batch
dimensions count as 1.

Runtimes pack channels into SIMD blocks (NCNN's elempack, onnxruntime's NCHWc, OpenVINO's
blocked layouts), so a convolution with 12 channels costs about what one with 16 does. The
``mmacs_conv_c4/c8/c16`` features count convolution MACs with the channels rounded up to
those blocks; the fit learns which block the device uses. Channel counts that fit no block
leave the packed kernels altogether (NCNN runs 3x3 convolutions at 30 channels about 2x
slower per MAC than at 32; onnxruntime keeps them in NCHW), so ``mmacs_conv_a1`` and
``mmacs_conv_a4`` count the MACs of convolutions whose channels are not multiples of 4, and
multiples of 4 but not 8.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx

FloatArray = NDArray[np.float64]

OPLEVEL_VERSION = 4
"""Version of the feature list and its definitions; bump when either changes."""

OP_KINDS = (
    "conv",  # regular convolution: group 1, a kernel larger than 1x1
    "conv_dw",  # depthwise: one group per input channel
    "conv_pw",  # pointwise: 1x1 kernel, group 1
    "conv_grouped",  # 1 < group < input channels
    "gemm",  # Gemm, MatMul and their integer forms
    "add",
    "mul",
    "relu",
    "clip",
    "sigmoid",
    "batchnorm",
    "maxpool",
    "avgpool",
    "global_pool",
    "concat",
    "reshape",  # views: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout
    "movement",  # copies: Transpose, Slice, Split, Pad, Gather, Resize...
    "quantize",
    "dequantize",
    "eltwise_other",  # other elementwise ops
    "other",
)
"""Op kinds, in feature order."""

MAC_KINDS = (
    "conv",
    "conv_dw",
    "conv_pw",
    "conv_grouped",
    "gemm",
    "maxpool",
    "avgpool",
    "global_pool",
)
"""Kinds that have an ``mmacs_`` feature (pools count one MAC per window element)."""

TOTAL_FEATURES = (
    "count_total",  # live nodes
    "mmacs_total",
    "mbytes_total",
    "mbytes_weights",  # constant inputs of live nodes
    "depth",  # longest live path from an input, in nodes
    "width",  # most live nodes at one depth level
    "count_dead",
    "mmacs_dead",
    "count_unused",  # depend on an input, reach no output
    "mmacs_unused",
    "mbytes_unused",
)

CHANNEL_BLOCKS = (4, 8, 16)
"""Channel blocks of the packed-MACs features ``mmacs_conv_c<block>``."""

ALIGNMENTS = (1, 4)
"""Alignments of the ``mmacs_conv_a<n>`` features: convolution MACs whose input and output
channel counts are both multiples of ``n`` but not of the next step (4, then 8)."""

OPLEVEL_FEATURES: tuple[str, ...] = (
    *(f"count_{k}" for k in OP_KINDS),
    *(f"mmacs_{k}" for k in MAC_KINDS),
    *(f"mbytes_{k}" for k in OP_KINDS),
    *TOTAL_FEATURES,
    *(f"mmacs_conv_c{b}" for b in CHANNEL_BLOCKS),
    *(f"mmacs_conv_a{a}" for a in ALIGNMENTS),
)
"""Names of the columns :func:`oplevel_features` returns, in order."""

_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "ConvTranspose": 1, "QLinearConv": 3}
_GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm", "FusedMatMul"}
_SIMPLE_KINDS = {
    "Add": "add", "Sum": "add", "QLinearAdd": "add", "Mul": "mul", "QLinearMul": "mul",
    "Relu": "relu", "Clip": "clip", "Sigmoid": "sigmoid", "QLinearSigmoid": "sigmoid",
    "BatchNormalization": "batchnorm", "MaxPool": "maxpool", "AveragePool": "avgpool",
    "LpPool": "avgpool", "QLinearAveragePool": "avgpool", "GlobalAveragePool": "global_pool",
    "GlobalMaxPool": "global_pool", "QLinearGlobalAveragePool": "global_pool",
    "Concat": "concat", "QLinearConcat": "concat", "QuantizeLinear": "quantize",
    "DynamicQuantizeLinear": "quantize", "DequantizeLinear": "dequantize",
}  # fmt: skip
_VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_MOVEMENT_OPS = {
    "Transpose", "Slice", "Split", "Pad", "Gather", "GatherElements", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "Resize", "Upsample",
}  # fmt: skip
_ELTWISE_OPS = {
    "Sub", "Div", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Erf", "Exp", "Log",
    "Sqrt", "Pow", "Neg", "Abs", "Max", "Min", "Where", "Gelu", "Cast", "PRelu", "Elu",
    "Selu", "Softplus", "Mish", "Reciprocal", "Equal", "Less", "Greater", "Not", "And", "Or",
    "Mean",
}  # fmt: skip


class FeatureError(ValueError):
    """A graph cannot be featurized; the message names the graph and the reason."""


def oplevel_features(model: onnx.ModelProto | bytes, *, name: str | None = None) -> FloatArray:
    """Op-level features of one graph, in :data:`OPLEVEL_FEATURES` order.

    Args:
        model: The graph, as a ModelProto or its serialized bytes.
        name: What error messages call the graph; default its ``graph.name``.

    Returns:
        Shape ``(len(OPLEVEL_FEATURES),)``, float64.

    Raises:
        FeatureError: the bytes are no ONNX model, shape inference fails, or a compute
            node's shapes stay unknown.
    """
    values = oplevel_feature_dict(model, name=name)
    return np.array([values[f] for f in OPLEVEL_FEATURES], dtype=np.float64)


def oplevel_matrix(
    models: Iterable[onnx.ModelProto | bytes], *, names: Sequence[str] | None = None
) -> FloatArray:
    """Op-level features of many graphs, shape ``(n_graphs, len(OPLEVEL_FEATURES))``."""
    rows = [
        oplevel_features(m, name=None if names is None else names[i]) for i, m in enumerate(models)
    ]
    return np.vstack(rows) if rows else np.zeros((0, len(OPLEVEL_FEATURES)))


def oplevel_feature_dict(
    model: onnx.ModelProto | bytes, *, name: str | None = None
) -> dict[str, float]:
    """The same features as :func:`oplevel_features`, keyed by name."""
    proto = _load(model, name)
    label = name or proto.graph.name or "<unnamed graph>"
    graph = _Graph(proto, label)
    return graph.features()


def _load(model: onnx.ModelProto | bytes, name: str | None) -> onnx.ModelProto:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (bytes, bytearray, memoryview)):
        raise TypeError(f"model must be an onnx.ModelProto or bytes, got {type(model).__name__}.")
    try:
        return onnx.load_from_string(bytes(model))
    except Exception as exc:  # protobuf raises DecodeError and friends
        label = name or f"{len(model)} bytes"
        raise FeatureError(f"graph {label!r} is not a readable ONNX model: {exc}") from exc


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


@functools.lru_cache(maxsize=64)
def _elem_size(elem_type: int) -> int:
    from onnx import helper

    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4


class _Graph:
    """One graph's tensors, shapes and liveness; computes the features."""

    def __init__(self, model: onnx.ModelProto, label: str) -> None:
        self.model = model
        self.label = label
        self.nodes = list(model.graph.node)
        self.inits = {i.name for i in model.graph.initializer}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.sizes: dict[str, int] = {}

    def features(self) -> dict[str, float]:
        self._infer_shapes()
        order = self._topological_order()
        live, varying, unused = self._liveness(order)
        out = dict.fromkeys(OPLEVEL_FEATURES, 0.0)
        for i in order:
            node = self.nodes[i]
            weight = self._weight_shape(node)
            kind = _kind(node, weight)
            macs = self._macs(node, kind, weight)
            if i not in live and i not in unused:  # constant-only: a runtime folds it
                out["count_dead"] += 1
                out["mmacs_dead"] += macs / 1e6
                continue
            mbytes = self._bytes(node.input, node.output) / 1e6
            if i in unused:
                out["count_unused"] += 1
                out["mmacs_unused"] += macs / 1e6
                out["mbytes_unused"] += mbytes
                continue
            out[f"count_{kind}"] += 1
            out[f"mbytes_{kind}"] += mbytes
            if kind in MAC_KINDS:
                out[f"mmacs_{kind}"] += macs / 1e6
            if kind.startswith("conv"):
                for block in CHANNEL_BLOCKS:
                    out[f"mmacs_conv_c{block}"] += self._packed_macs(node, block, weight) / 1e6
                align = _alignment(node, weight)
                if align in ALIGNMENTS:
                    out[f"mmacs_conv_a{align}"] += macs / 1e6
            out["count_total"] += 1
            out["mmacs_total"] += macs / 1e6
            out["mbytes_total"] += mbytes
            consts = [t for t in node.input if t and t not in varying]
            out["mbytes_weights"] += self._bytes(consts, []) / 1e6
        out["depth"], out["width"] = _depth_width(self._live_levels(order, live))
        return out

    # --- shapes -------------------------------------------------------------------------
    def _infer_shapes(self) -> None:
        import onnx
        from onnx import helper

        g = self.model.graph
        # Inference needs only the initializers' shapes: declaring large ones as typed inputs
        # instead of copying their data keeps it fast on real models.
        light = onnx.ModelProto()
        light.ir_version = self.model.ir_version
        light.opset_import.extend(self.model.opset_import)
        light.graph.node.extend(g.node)
        light.graph.input.extend(g.input)
        light.graph.output.extend(g.output)
        input_names = {i.name for i in g.input}
        for init in g.initializer:
            self.shapes[init.name] = tuple(int(d) for d in init.dims)
            self.sizes[init.name] = _elem_size(init.data_type)
            if _numel(init.dims) <= 64:
                light.graph.initializer.append(init)
            elif init.name not in input_names:
                light.graph.input.append(
                    helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        try:
            inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError and C++ errors
            raise FeatureError(
                f"graph {self.label!r}: ONNX shape inference failed: {exc}"
            ) from exc
        ig = inferred.graph
        for vi in [*ig.input, *ig.value_info, *ig.output]:
            if vi.name in self.inits:
                continue
            tt = vi.type.tensor_type
            self.sizes[vi.name] = _elem_size(tt.elem_type)
            self.shapes[vi.name] = _static_dims(tt) if tt.HasField("shape") else None

    def _shape(self, tensor: str, node: onnx.NodeProto) -> tuple[int, ...]:
        """A shape a compute node needs; unknown shapes are an error, not a guess."""
        shape = self.shapes.get(tensor)
        if shape is None:
            raise FeatureError(
                f"graph {self.label!r}: node {node.name or node.op_type!r} ({node.op_type}) has "
                f"tensor {tensor!r} of unknown shape after shape inference. Export the graph "
                "with static input shapes."
            )
        return shape

    def _bytes(self, inputs: Iterable[str], outputs: Iterable[str]) -> float:
        total = 0
        for t in [*inputs, *outputs]:
            shape = self.shapes.get(t) if t else None
            if shape is not None:
                total += _numel(shape) * self.sizes.get(t, 4)
        return float(total)

    def _weight_shape(self, node: onnx.NodeProto) -> tuple[int, ...] | None:
        idx = _CONV_WEIGHT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            return None
        return self._shape(node.input[idx], node)

    # --- work ---------------------------------------------------------------------------
    def _macs(self, node: onnx.NodeProto, kind: str, w: tuple[int, ...] | None) -> float:
        op = node.op_type
        if op in _CONV_WEIGHT:
            if w is None or len(w) < 2:
                return 0.0
            if op == "ConvTranspose":
                return float(_numel(self._shape(node.input[0], node)) * _numel(w[1:]))
            return float(_numel(self._shape(node.output[0], node)) * _numel(w[1:]))
        if op in _GEMM_OPS:
            a = self._shape(node.input[0], node)
            trans_a = _attr(node, "transA", 0)
            k = (a[0] if trans_a else a[-1]) if a else 1
            return float(_numel(self._shape(node.output[0], node)) * k)
        if kind in ("maxpool", "avgpool"):
            window = _numel(_attr(node, "kernel_shape", []))
            return float(_numel(self._shape(node.output[0], node)) * window)
        if kind == "global_pool":
            return float(_numel(self._shape(node.input[0], node)))
        return 0.0

    def _packed_macs(self, node: onnx.NodeProto, block: int, w: tuple[int, ...] | None) -> float:
        """Convolution MACs, output and per-group input channels rounded up to ``block``."""
        if node.op_type == "ConvTranspose" or w is None or len(w) < 2:
            return self._macs(node, "conv", w)
        out = self._shape(node.output[0], node)
        c_out = -(-w[0] // block) * block
        c_in = -(-w[1] // block) * block if w[1] > 1 else 1
        return float(_numel(out) // max(out[1], 1) * c_out * c_in * _numel(w[2:]))

    # --- liveness -----------------------------------------------------------------------
    def _topological_order(self) -> list[int]:
        produced = {t: i for i, n in enumerate(self.nodes) for t in n.output if t}
        deps = [
            {produced[t] for t in n.input if t in produced and produced[t] != i}
            for i, n in enumerate(self.nodes)
        ]
        users: list[list[int]] = [[] for _ in self.nodes]
        for i, ds in enumerate(deps):
            for d in ds:
                users[d].append(i)
        pending = [len(ds) for ds in deps]
        ready = [i for i, p in enumerate(pending) if p == 0]  # a heap: file order when free
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in users[i]:
                pending[u] -= 1
                if pending[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(self.nodes):
            raise FeatureError(f"graph {self.label!r} has a cycle; ONNX graphs must be acyclic.")
        return order

    def _liveness(self, order: list[int]) -> tuple[set[int], set[str], set[int]]:
        """Live node indices, the tensors that vary with a graph input, unused nodes."""
        varying = {i.name for i in self.model.graph.input if i.name not in self.inits}
        from_input: set[int] = set()
        for i in order:
            node = self.nodes[i]
            if any(t in varying for t in node.input):
                from_input.add(i)
                varying.update(t for t in node.output if t)
        needed = {o.name for o in self.model.graph.output}
        useful: set[int] = set()
        for i in reversed(order):
            node = self.nodes[i]
            if any(t in needed for t in node.output):
                useful.add(i)
                needed.update(t for t in node.input if t)
        return from_input & useful, varying, from_input - useful

    def _live_levels(self, order: list[int], live: set[int]) -> list[int]:
        """Depth level (1-based) of every live node: 1 + the deepest live producer."""
        level_of: dict[str, int] = {}
        levels: list[int] = []
        for i in order:
            if i not in live:
                continue
            node = self.nodes[i]
            level = 1 + max((level_of.get(t, 0) for t in node.input if t), default=0)
            for t in node.output:
                level_of[t] = level
            levels.append(level)
        return levels


def _static_dims(tensor_type: Any) -> tuple[int, ...] | None:
    dims: list[int] = []
    for i, d in enumerate(tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif i == 0:
            dims.append(1)  # an unnamed or symbolic batch: batch 1
        else:
            return None
    return tuple(dims)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _kind(node: onnx.NodeProto, weight: tuple[int, ...] | None) -> str:
    """The op kind of a node (one of :data:`OP_KINDS`)."""
    op = node.op_type
    if op in _CONV_WEIGHT:
        return _conv_kind(node, weight)
    if op in _GEMM_OPS:
        return "gemm"
    if op in _SIMPLE_KINDS:
        return _SIMPLE_KINDS[op]
    if op in _VIEW_OPS:
        return "reshape"
    if op in _MOVEMENT_OPS:
        return "movement"
    if op in _ELTWISE_OPS:
        return "eltwise_other"
    return "other"


def _conv_kind(node: onnx.NodeProto, weight: tuple[int, ...] | None) -> str:
    group = int(_attr(node, "group", 1))
    if weight is None or len(weight) < 2 or node.op_type == "ConvTranspose":
        return "conv"
    c_in = weight[1] * group
    if group > 1:
        return "conv_dw" if group == c_in else "conv_grouped"
    return "conv_pw" if all(k == 1 for k in weight[2:]) else "conv"


def _alignment(node: onnx.NodeProto, weight: tuple[int, ...] | None) -> int:
    """8, 4 or 1: the largest of these dividing a convolution's input and output channels."""
    if weight is None or len(weight) < 2:
        return 8
    c_out, c_in = weight[0], weight[1] * int(_attr(node, "group", 1))
    if node.op_type == "ConvTranspose":
        c_out, c_in = c_in, weight[0]
    return next(a for a in (8, 4, 1) if c_out % a == 0 and c_in % a == 0)


def _depth_width(levels: list[int]) -> tuple[float, float]:
    if not levels:
        return 0.0, 0.0
    counts = np.bincount(np.asarray(levels))
    return float(max(levels)), float(counts.max())
