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

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from latency_models._graph import GraphLike, load_graph
from latency_models.measurement._host import NCHWC_BLOCKS, host_nchwc_block

if TYPE_CHECKING:
    import onnx

FEATURE_VERSION = 9
"""Version of the featurization; part of every saved predictor and stored feature record.

What each version changed: CHANGELOG.md."""

COMPUTE_KINDS = ("conv", "conv1x1", "dwconv", "gemm", "gconv")
"""Kernel kinds that do multiply-adds; ``kernel_fields`` codes them by position (others -1)."""


NCHWC_ALIGN = 4
"""Channel multiple onnxruntime pads up to whole NCHWc blocks; other channel counts stay NCHW."""

_CONV_OPS = {"Conv", "ConvTranspose"}
_GEMM_OPS = {"Gemm", "MatMul"}
_POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
_ACT_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}
_ELTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid",
    "HardSwish", "Erf", "Exp", "Log", "Sqrt", "Pow", "Neg", "Abs", "Max", "Min", "Where",
    "Gelu", "BatchNormalization", "Cast", "PRelu", "Elu", "Selu", "Softplus", "Mish",
    "Reciprocal", "Equal", "Less", "Greater", "Not", "And", "Or", "Sum", "Mean",
}  # fmt: skip
_MEMORY_OPS = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Pad", "Gather", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth",
    "Shape", "Size", "ConstantOfShape",
}  # fmt: skip
_REDUCE_OPS = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
    "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization",
    "GroupNormalization", "ArgMax", "ArgMin", "TopK",
}  # fmt: skip
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops whose QDQ form onnxruntime turns into one integer kernel (or runs on int8 data).
_QDQ_CAPABLE = (
    _CONV_OPS
    | _GEMM_OPS
    | _POOL_OPS
    | {"Add", "Mul", "Sigmoid", "LeakyRelu", "Softmax", "Concat", "Reshape", "Flatten"}
    | {"Squeeze", "Unsqueeze", "Transpose", "Resize", "Gather", "Slice", "Split", "Pad"}
)
_QDQ_VANISH = {"Relu", "Clip"}  # Q(Relu(DQ(x))) is just a narrower quantization range
_INT8_NAMES = {
    "Conv": "QLinearConv", "ConvTranspose": "QLinearConvTranspose", "Gemm": "QGemm",
    "MatMul": "QLinearMatMul", "Add": "QLinearAdd", "Mul": "QLinearMul",
    "AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool",
    "Sigmoid": "QLinearSigmoid", "LeakyRelu": "QLinearLeakyRelu", "Softmax": "QLinearSoftmax",
    "Concat": "QLinearConcat",
}  # fmt: skip
_BYTES_PER_ELEM = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}

KINDS = (
    "conv", "dwconv", "conv1x1", "gemm", "pool", "eltwise", "memory", "reduce", "quant", "layout",
    "gconv", "qpool",
)  # fmt: skip
"""Kernel kinds a predictor buckets kernels into; ``other`` holds ops none of them covers.

``gconv`` is an fp32 grouped or depthwise conv that onnxruntime cannot run in the NCHWc
layout (channels not a multiple of :data:`NCHWC_ALIGN`, say 750): it runs NCHW, one small
matrix product per group, at a cost per group that dwarfs its multiply-adds (a 3x3
depthwise conv of 1875 channels on a 2x2 map took 380 us where MobileNetV2's NCHWc one of
528 channels on 3x3 took 6 us, on ``local-cpu``). ``qpool`` is an int8 ``MaxPool`` that
runs NCHW, onnxruntime's generic loop over the quantized tensor: in a ResNet-18 whose stem
conv stays fp32 and whose next convs are int8, the stem's pool took 1.5 ms where the fp32
pool of the same net takes 0.1 ms."""


@dataclass(frozen=True)
class KernelFeatures:
    """One kernel the runtime runs, after fusion.

    Attributes:
        op: Runtime kernel name after fusion (``"FusedConv"``, ``"QLinearConv"``, ``"Gemm"``).
        source_op: The ONNX op type it came from.
        kind: Predictor bucket, one of :data:`KINDS` or ``"other"``.
        dtype: ``"fp32"`` or ``"int8"``.
        input_shape: Shape of the main input, elements per dim.
        output_shape: Shape of the output.
        kernel_size: (kh, kw) for convs and pools, else (1, 1).
        stride: (sh, sw) for convs and pools, else (1, 1).
        groups: Convolution groups (1 otherwise).
        in_channels: Input channels (or reduction length K for a matmul).
        out_channels: Output channels (or N for a matmul).
        macs: Multiply-accumulates (one per element for element-wise ops).
        weight_bytes: Bytes of the constant weights it reads, at their dtype.
        activation_bytes: Bytes of activations read and written, at their dtype.
        fused: Op types absorbed into this kernel.
        nodes: Names of the ONNX nodes this kernel runs (the main one first), to line it up
            with onnxruntime's per-node profile; empty for inserted layout kernels. Not
            a predictor input.
    """

    op: str
    source_op: str
    kind: str
    dtype: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    in_channels: int = 0
    out_channels: int = 0
    macs: float = 0.0
    weight_bytes: float = 0.0
    activation_bytes: float = 0.0
    fused: tuple[str, ...] = ()
    nodes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """``kind.dtype``, the bucket of the kernel-additive predictor (``"conv.int8"``)."""
        return f"{self.kind}.{self.dtype}"

    @property
    def output_pixels(self) -> int:
        """Spatial size of the output (H*W for 4-D outputs, else the last dim), elements."""
        if len(self.output_shape) >= 4:
            return int(math.prod(self.output_shape[2:]))
        return int(self.output_shape[-1]) if self.output_shape else 1


@dataclass(frozen=True)
class GraphFeatures:
    """The kernels of one graph and its totals (JSON-able through :meth:`to_dict`).

    Attributes:
        kernels: Kernels in execution (topological) order.
        totals: Graph-level totals, see :func:`graph_totals`.
        unknown_ops: ONNX op types that no kernel kind covers (bucketed as ``"other"``).
        feature_version: :data:`FEATURE_VERSION` when computed.
    """

    kernels: tuple[KernelFeatures, ...]
    totals: Mapping[str, float]
    unknown_ops: tuple[str, ...] = ()
    feature_version: int = FEATURE_VERSION
    _meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reverses it."""
        return {
            "feature_version": self.feature_version,
            "kernels": [asdict(k) for k in self.kernels],
            "totals": dict(self.totals),
            "unknown_ops": list(self.unknown_ops),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphFeatures:
        """Rebuild features from :meth:`to_dict` output.

        Raises:
            ValueError: the dict was written by another :data:`FEATURE_VERSION`.
        """
        version = data.get("feature_version")
        if version != FEATURE_VERSION:
            raise ValueError(
                f"stored graph features have feature_version {version!r}, this hwnas computes "
                f"version {FEATURE_VERSION}. Recompute them with graph_features(graph)."
            )
        kernels = []
        for k in data["kernels"]:
            k = dict(k)
            for name in ("input_shape", "output_shape", "kernel_size", "stride", "fused", "nodes"):
                if name not in k:
                    continue
                k[name] = tuple(k[name])
            kernels.append(KernelFeatures(**k))
        return cls(
            kernels=tuple(kernels),
            totals={str(a): float(b) for a, b in data["totals"].items()},
            unknown_ops=tuple(data.get("unknown_ops", ())),
        )


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
    return _Fuser(model, batch_size, block).run()


def graph_totals(kernels: Sequence[KernelFeatures]) -> dict[str, float]:
    """Graph-level totals of ``kernels``: counts, MACs per dtype, bytes, alignment shares.

    Keys: ``n_kernels``, ``macs``, ``macs_fp32``, ``macs_int8``, ``weight_bytes``,
    ``activation_bytes``, ``bytes`` (the two summed), ``n_<kind>``, ``macs_<kind>``,
    ``int8_mac_share``, ``misaligned8_mac_share``, ``misaligned16_mac_share``,
    ``max_activation_bytes``, ``mean_output_pixels`` (MAC-weighted), ``depthwise_mac_share``.
    """
    t: dict[str, float] = {"n_kernels": float(len(kernels))}
    macs = sum(k.macs for k in kernels)
    t["macs"] = macs
    t["macs_fp32"] = sum(k.macs for k in kernels if k.dtype == "fp32")
    t["macs_int8"] = sum(k.macs for k in kernels if k.dtype == "int8")
    t["weight_bytes"] = sum(k.weight_bytes for k in kernels)
    t["activation_bytes"] = sum(k.activation_bytes for k in kernels)
    t["bytes"] = t["weight_bytes"] + t["activation_bytes"]
    for kind in (*KINDS, "other"):
        t[f"n_{kind}"] = float(sum(1 for k in kernels if k.kind == kind))
        t[f"macs_{kind}"] = sum(k.macs for k in kernels if k.kind == kind)
    compute = [k for k in kernels if k.kind in COMPUTE_KINDS]
    denom = max(sum(k.macs for k in compute), 1.0)
    t["int8_mac_share"] = t["macs_int8"] / max(macs, 1.0)
    t["misaligned8_mac_share"] = (
        sum(k.macs for k in compute if k.in_channels % 8 or k.out_channels % 8) / denom
    )
    t["misaligned16_mac_share"] = (
        sum(k.macs for k in compute if k.in_channels % 16 or k.out_channels % 16) / denom
    )
    t["depthwise_mac_share"] = t["macs_dwconv"] / denom
    t["max_activation_bytes"] = max((k.activation_bytes for k in kernels), default=0.0)
    t["mean_output_pixels"] = sum(k.macs * k.output_pixels for k in compute) / denom
    return t


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def _pair(values: Sequence[int], default: int = 1) -> tuple[int, int]:
    vals = list(values) or [default]
    return (int(vals[0]), int(vals[-1]))


class _Fuser:
    """One pass over a graph: fold constants, recognise QDQ kernels, fuse fp32 chains."""

    def __init__(self, model: onnx.ModelProto, batch_size: int, block: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.block = block
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.elem: dict[str, int] = {}
        self.const: set[str] = set(self.inits)
        self.const_elem: dict[str, int] = {n: i.data_type for n, i in self.inits.items()}
        self.alias: dict[str, str] = {}

    # --- shapes -------------------------------------------------------------------------
    def _infer_shapes(self) -> None:
        import onnx
        from onnx import helper

        # Shape inference needs only the big initializers' shapes: declare them as typed
        # inputs instead of copying their data (10-100x faster on real models).
        light = onnx.ModelProto()
        light.ir_version = self.model.ir_version
        light.opset_import.extend(self.model.opset_import)
        light.graph.node.extend(self.graph.node)
        light.graph.input.extend(self.graph.input)
        light.graph.output.extend(self.graph.output)
        input_names = {i.name for i in self.graph.input}
        for init in self.graph.initializer:
            if _numel(init.dims) <= 64:
                light.graph.initializer.append(init)
            elif init.name not in input_names:
                light.graph.input.append(
                    helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        for init in self.graph.initializer:
            self.shapes[init.name] = tuple(int(d) for d in init.dims)
            self.elem[init.name] = init.data_type
        try:
            inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError and C++ errors
            raise ValueError(f"ONNX shape inference failed on this graph: {exc}") from exc
        g = inferred.graph
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                else:
                    dims.append(self.batch_size if i == 0 else 1)
            self.shapes[vi.name] = tuple(dims)
            self.elem[vi.name] = tt.elem_type

    def _static_shape(self, name: str) -> bool:
        return name in self.shapes

    # --- helpers ------------------------------------------------------------------------
    def _r(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def _bytes(self, name: str, dtype: str | None = None) -> float:
        shape = self.shapes.get(name, ())
        if dtype == "int8":
            per = 1
        elif dtype == "fp32":
            per = 4
        else:
            per = _BYTES_PER_ELEM.get(self.elem.get(name, 1), 4)
        return float(_numel(shape) * per)

    def _channels(self, name: str) -> int:
        shape = self.shapes.get(name, ())
        return int(shape[1]) if len(shape) >= 2 else 0

    # --- main pass ----------------------------------------------------------------------
    def run(self) -> GraphFeatures:
        from onnx import helper

        self._infer_shapes()
        nodes = []
        for node in self.graph.node:
            inputs = [self._r(i) for i in node.input]
            op = node.op_type
            if op in ("Identity", "Dropout") and inputs and inputs[0]:
                self.alias[node.output[0]] = inputs[0]
                continue
            if op == "Constant" or (
                node.input
                and all((not i) or i in self.const for i in inputs)
                and op not in ("RandomNormal", "RandomUniform")
            ):
                for o in node.output:
                    self.const.add(o)
                passes_dtype = op in ("DequantizeLinear", "Transpose", "Reshape", "Cast")
                if passes_dtype and inputs[0] in self.const_elem:
                    self.const_elem[node.output[0]] = self.const_elem[inputs[0]]
                continue
            if op == "Shape" and inputs and self._static_shape(inputs[0]):
                self.const.add(node.output[0])
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nodes.append(
                {
                    "op": op,
                    "name": node.name,
                    "inputs": inputs,
                    "outputs": list(node.output),
                    "attrs": attrs,
                }
            )
        return self._fuse(nodes)

    def _fuse(self, nodes: list[dict[str, Any]]) -> GraphFeatures:
        producer: dict[str, int] = {}
        consumers: dict[str, list[int]] = {}
        for idx, n in enumerate(nodes):
            for o in n["outputs"]:
                producer[o] = idx
            for i in n["inputs"]:
                if i:
                    consumers.setdefault(i, []).append(idx)
        # ordered (a dict): the reorders after the outputs come in the graph's output order,
        # not in a set's, which changes from process to process
        graph_outputs = dict.fromkeys(self._r(o.name) for o in self.graph.output)

        def prod_op(name: str) -> str | None:
            idx = producer.get(name)
            return None if idx is None else nodes[idx]["op"]

        def act_inputs(n: dict[str, Any]) -> list[str]:
            return [i for i in n["inputs"] if i and i not in self.const]

        # 1. QDQ: which compute nodes run as integer kernels.
        int8: set[int] = set()
        vanish: set[int] = set()
        for idx, n in enumerate(nodes):
            op = n["op"]
            if op not in _QDQ_CAPABLE and op not in _QDQ_VANISH:
                continue
            acts = act_inputs(n)
            if not acts or not all(prod_op(a) == "DequantizeLinear" for a in acts):
                continue
            outs_to_q = all(
                consumers.get(o)
                and all(nodes[c]["op"] == "QuantizeLinear" for c in consumers.get(o, []))
                for o in n["outputs"][:1]
            )
            if op in _CONV_OPS or op in _GEMM_OPS:
                weights = [i for i in n["inputs"][1:2] if i]
                w_int8 = any(self.const_elem.get(w) in (2, 3) for w in weights)
                if op == "MatMul" and not weights:
                    w_int8 = False
                if op == "MatMul" and len(acts) == 2:
                    w_int8 = True  # activation x activation, both quantized
                # Conv -> Relu/Clip -> Q: the activation folds into the quantization range.
                act_to_q = None
                cs = consumers.get(n["outputs"][0], [])
                if len(cs) == 1 and nodes[cs[0]]["op"] in _QDQ_VANISH:
                    qs = consumers.get(nodes[cs[0]]["outputs"][0], [])
                    if qs and all(nodes[c]["op"] == "QuantizeLinear" for c in qs):
                        act_to_q = cs[0]
                # onnxruntime quantizes a float weight itself when the activations are QDQ
                # on both sides (a conv left out by nodes_to_exclude still runs as integer).
                if (outs_to_q or act_to_q is not None) or (w_int8 and op in _GEMM_OPS):
                    int8.add(idx)
                    if act_to_q is not None:
                        vanish.add(act_to_q)
            elif outs_to_q:
                (vanish if op in _QDQ_VANISH else int8).add(idx)
        # onnxruntime moves a QuantizeLinear that alone reads a float MaxPool's output ahead
        # of the pool (QDQ propagation): the pool then runs on the quantized tensor, NCHW.
        quantize_first: dict[int, int] = {}  # the pool -> its QuantizeLinear
        for idx, n in enumerate(nodes):
            cs = consumers.get(n["outputs"][0], []) if n["outputs"] else []
            if (
                n["op"] == "MaxPool"
                and idx not in int8
                and len(cs) == 1
                and nodes[cs[0]]["op"] == "QuantizeLinear"
                and n["outputs"][0] not in graph_outputs
            ):
                int8.add(idx)
                quantize_first[idx] = cs[0]
        absorbed: set[int] = set(vanish)
        for idx, n in enumerate(nodes):
            if n["op"] == "DequantizeLinear":
                cs = consumers.get(n["outputs"][0], [])
                if cs and all(c in int8 or c in vanish for c in cs):
                    absorbed.add(idx)
            elif n["op"] == "QuantizeLinear":
                src = producer.get(n["inputs"][0])
                if src is not None and (src in int8 or src in vanish):
                    absorbed.add(idx)
                elif src is not None and nodes[src]["op"] == "DequantizeLinear":
                    absorbed.add(idx)  # DQ -> Q pairs cancel out
                    if all(
                        nodes[c]["op"] == "QuantizeLinear"
                        for c in consumers.get(nodes[src]["outputs"][0], [])
                    ):
                        absorbed.add(src)

        # 2. fp32 fusions onto conv / gemm.
        nchwc_conv = {idx for idx, n in enumerate(nodes) if self._nchwc_conv(n)}
        fused_into: dict[int, list[int]] = {}
        owner: dict[str, int] = {}  # tensor -> fused kernel that now produces it

        def nchwc_made(t: str) -> bool:
            """Whether an fp32 kernel that keeps the NCHWc layout produces ``t``."""
            j = owner.get(t, producer.get(t))
            if j is None or j in int8 or j in absorbed:
                return False
            op = nodes[j]["op"]
            return j in nchwc_conv or (op in _POOL_OPS and self._channels(t) % self.block == 0)

        for idx, n in enumerate(nodes):
            if idx in absorbed:
                continue
            op = n["op"]
            if idx in int8 or op in _QUANT_OPS:
                continue
            acts = act_inputs(n)
            if not acts:
                continue
            src = owner.get(acts[0], producer.get(acts[0]))
            sole = len(consumers.get(acts[0], [])) == 1 and acts[0] not in graph_outputs
            if src is None or src in int8 or src in absorbed:
                src = None
            if src is not None and not sole:
                src = None
            base = nodes[src]["op"] if src is not None else None
            chain = [nodes[j]["op"] for j in fused_into.get(src, [])] if src is not None else []
            fuse = False
            has_act = any(c in _ACT_OPS for c in chain)
            base_nchwc = src in nchwc_conv
            if base in _CONV_OPS:
                fuse = (
                    (op == "BatchNormalization" and not chain)
                    or (op in _ACT_OPS and not has_act)
                    # bias / scale by a constant
                    or (op in ("Add", "Mul") and len(acts) == 1 and not chain)
                    # residual sum (onnxruntime's NCHWc conv with Sum, whole channel blocks)
                    or (
                        op == "Add"
                        and len(acts) == 2
                        and "Add" not in chain
                        and not has_act
                        # an NCHWc conv sums whole blocks; an NCHW one takes any operand
                        and (nchwc_made(acts[1]) or not base_nchwc)
                    )
                )
            elif base in ("MatMul", "Gemm"):
                fuse = not chain and (
                    (base == "MatMul" and op == "Add" and len(acts) == 1)
                    or (base == "Gemm" and op in _ACT_OPS)
                )
            if not fuse and op == "Add" and len(acts) == 2:
                # residual where the conv is the second input
                src2 = owner.get(acts[1], producer.get(acts[1]))
                if (
                    src2 is not None
                    and src2 not in int8
                    and src2 not in absorbed
                    and nodes[src2]["op"] in _CONV_OPS
                    and len(consumers.get(acts[1], [])) == 1
                    and not any(nodes[j]["op"] in ("Add",) for j in fused_into.get(src2, []))
                    and not any(nodes[j]["op"] in _ACT_OPS for j in fused_into.get(src2, []))
                    and (nchwc_made(acts[0]) or src2 not in nchwc_conv)
                ):
                    src, fuse = src2, True
            if fuse and src is not None:
                fused_into.setdefault(src, []).append(idx)
                absorbed.add(idx)
                for o in n["outputs"]:
                    owner[o] = src

        # 3. Emit kernels, and where each kernel's activations come from.
        kernels: list[KernelFeatures] = []
        unknown: list[str] = []
        made_by: dict[str, int] = {}  # tensor -> index in kernels of the kernel producing it
        kernel_inputs: list[list[str]] = []
        nchwc_convs: set[int] = set()  # kernels that are fp32 convs onnxruntime runs NCHWc
        for idx, n in enumerate(nodes):
            if idx in absorbed:
                continue
            extra = fused_into.get(idx, [])
            if idx in quantize_first:  # the moved QuantizeLinear, on the pool's input
                q = nodes[quantize_first[idx]]
                moved = f"{n['inputs'][0]}/quantized"
                self.shapes[moved] = self.shapes.get(n["inputs"][0], ())
                qn = {**q, "name": "", "inputs": [n["inputs"][0], *q["inputs"][1:]],
                      "outputs": [moved]}  # fmt: skip
                made_by[moved] = len(kernels)
                kernel_inputs.append([n["inputs"][0]])
                kernels.append(replace(self._kernel(qn, False, False, [], moved), nodes=()))
                n = {**n, "inputs": [moved, *n["inputs"][1:]]}
            out = n["outputs"][-1] if not extra else nodes[extra[-1]]["outputs"][0]
            nchwc = idx not in int8 and idx in nchwc_conv
            k = self._kernel(n, idx in int8, nchwc, [nodes[j] for j in extra], out)
            if k.kind == "other" and k.source_op not in unknown:
                unknown.append(k.source_op)
            for o in [*n["outputs"], *(o for j in extra for o in nodes[j]["outputs"])]:
                made_by[o] = len(kernels)
            chain_out = {o for j in [idx, *extra] for o in nodes[j]["outputs"]}
            kernel_inputs.append(
                # a fused residual Add's other operand is read by the kernel too
                [
                    *act_inputs(n),
                    *(a for j in extra for a in act_inputs(nodes[j]) if a not in chain_out),
                ]
            )
            if nchwc:
                nchwc_convs.add(len(kernels))
            kernels.append(k)
        # Absorbed Q/DQ and vanished Relu/Clip pass their input tensor through.
        passthrough = {
            nodes[i]["outputs"][0]: nodes[i]["inputs"][0]
            for i in absorbed
            if nodes[i]["op"] in _QUANT_OPS or i in vanish
        }
        kernels = self._layout_kernels(
            kernels, kernel_inputs, nchwc_convs, made_by, passthrough, graph_outputs
        )
        return GraphFeatures(
            kernels=tuple(kernels),
            totals={**graph_totals(kernels), "nchwc_block": float(self.block)},
            unknown_ops=tuple(unknown),
        )

    def _nchwc_conv(self, n: dict[str, Any]) -> bool:
        """Whether onnxruntime runs this fp32 ``Conv`` node in the NCHWc layout.

        Measured on onnxruntime 1.32 (AVX-512, block 16) by reading its optimised graph for
        single convs of every channel count up to 48: a conv with constant 4-D weights is
        rewritten when its input channels are fewer than one block (read as NCHW) or a
        multiple of :data:`NCHWC_ALIGN` (padded to whole blocks); a depthwise conv when its
        channels are a multiple of :data:`NCHWC_ALIGN`; another grouped conv when each
        group has whole blocks in and out. Other convs (27 or 34 channels, say) stay NCHW.
        """
        if n["op"] != "Conv" or len(n["inputs"]) < 2 or n["inputs"][1] not in self.const:
            return False
        w = self.shapes.get(n["inputs"][1], ())
        if len(w) != 4:
            return False
        cout, cin, groups = int(w[0]), int(w[1]), int(n["attrs"].get("group", 1))
        if groups == 1:
            return cin < self.block or cin % NCHWC_ALIGN == 0
        if cin == 1 and cout == groups:
            return cout % NCHWC_ALIGN == 0
        return cin % self.block == 0 and cout % groups == 0 and (cout // groups) % self.block == 0

    def _layout_kernels(
        self,
        kernels: list[KernelFeatures],
        kernel_inputs: list[list[str]],
        nchwc_convs: set[int],
        made_by: dict[str, int],
        passthrough: dict[str, str],
        graph_outputs: Mapping[str, None],
    ) -> list[KernelFeatures]:
        """Insert the layout conversions onnxruntime's CPU provider adds between kernels.

        fp32 convs run in the blocked NCHWc layout (:attr:`block` channels a block, the
        CPU's: :func:`~latency_models.measurement._host.host_nchwc_block`), so do fp32 pools whose
        channels are a multiple of the block and element-wise ops between
        NCHWc tensors. int8 convs run channels-last (NHWC), and so do other int8 kernels
        whose inputs all come channels-last: onnxruntime wraps only the integer convs in
        transposes and pushes those forward through the ops they feed, so an int8 pool or
        add fed from the fp32 side stays NCHW. A tensor crossing from one
        layout to another costs a ``ReorderInput``/``ReorderOutput`` (fp32) or a
        ``Transpose`` (int8) over the whole tensor. An fp32 conv with fewer than
        :attr:`block` input channels reads NCHW directly. Found by reading the
        optimised graphs onnxruntime 1.32 writes (``optimized_model_filepath``).
        """

        def source(t: str, int8: bool = False) -> tuple[str, int | None]:
            # An int8 kernel reads the integer tensor behind a DequantizeLinear that is kept
            # for an fp32 consumer: onnxruntime gives the integer kernel its own QDQ pair.
            seen = 0
            while seen < 64:
                if t not in made_by and t in passthrough:
                    t = passthrough[t]
                elif (
                    int8
                    and t in made_by
                    and kernels[made_by[t]].op == "DequantizeLinear"
                    and kernel_inputs[made_by[t]]
                ):
                    t = kernel_inputs[made_by[t]][0]
                else:
                    break
                seen += 1
            return t, made_by.get(t)

        layouts: list[str] = []
        for i, k in enumerate(kernels):
            if len(k.input_shape) != 4:
                layouts.append("any")
            elif k.dtype == "int8" and k.source_op in _CONV_OPS:
                layouts.append("nhwc")
            elif k.dtype == "int8" and k.kind not in ("quant", "memory"):
                ins = [source(t, int8=True)[1] for t in kernel_inputs[i]]
                ok = all(j is not None and layouts[j] == "nhwc" for j in ins)
                layouts.append("nhwc" if ok and ins else "nchw")
            elif i in nchwc_convs or (
                k.dtype == "fp32" and k.kind == "pool" and k.in_channels % self.block == 0
            ):
                layouts.append("nchwc")
            elif k.source_op in {"Add", "Sum", "Relu", "Clip"} and k.dtype == "fp32":
                ins = [source(t)[1] for t in kernel_inputs[i]]
                ok = all(j is not None and layouts[j] == "nchwc" for j in ins)
                layouts.append("nchwc" if ok and ins else "nchw")
            else:
                layouts.append("nchw")
        out: list[KernelFeatures] = []
        done: set[tuple[str, str]] = set()

        def convert(t: str, frm: str, to: str, consumer: KernelFeatures | None) -> None:
            if (
                to == "nchwc"
                and consumer is not None
                and consumer.source_op == "Conv"
                and consumer.kind != "dwconv"
                and consumer.in_channels < self.block
            ):
                to = "nchw"  # the conv reads NCHW input directly
            if frm == to or "any" in (frm, to) or (t, to) in done:
                return
            shape = self.shapes.get(t, ())
            if len(shape) != 4:
                return
            done.add((t, to))
            int8_edge = "nhwc" in (frm, to)
            op = (
                "Transpose"
                if int8_edge
                else ("ReorderInput" if to == "nchwc" else "ReorderOutput")
            )
            nbytes = float(_numel(shape) * (1 if int8_edge else 4))
            out.append(
                KernelFeatures(
                    op=op, source_op=op, kind="layout", dtype="int8" if int8_edge else "fp32",
                    input_shape=shape, output_shape=shape, in_channels=int(shape[1]),
                    out_channels=int(shape[1]), macs=0.0, activation_bytes=2 * nbytes,
                )
            )  # fmt: skip

        for i, k in enumerate(kernels):
            for pos, t in enumerate(kernel_inputs[i]):
                src, j = source(t, int8=layouts[i] == "nhwc")
                # only the main input may be read NCHW directly, not a fused Add's operand
                convert(
                    src,
                    layouts[j] if j is not None else "nchw",
                    layouts[i],
                    k if pos == 0 else None,
                )
            if k.source_op == "MaxPool" and k.dtype == "int8" and layouts[i] == "nchw":
                k = replace(k, kind="qpool")  # onnxruntime's generic loop, not NhwcMaxPool
            out.append(k)
        for t in graph_outputs:
            src, j = source(t)
            if j is not None:
                convert(src, layouts[j], "nchw", None)
        return out

    def _kernel(
        self,
        n: dict[str, Any],
        is_int8: bool,
        nchwc: bool,
        extra: list[dict[str, Any]],
        out: str,
    ) -> KernelFeatures:
        """The kernel node ``n`` runs as, with the nodes in ``extra`` fused into it.

        ``nchwc``: ``n`` is an fp32 conv onnxruntime runs blocked (:meth:`_nchwc_conv`).
        """
        op: str = n["op"]
        attrs = n["attrs"]
        dtype = "int8" if is_int8 else "fp32"
        acts = [i for i in n["inputs"] if i and i not in self.const]
        main_in = acts[0] if acts else (n["inputs"][0] if n["inputs"] else "")
        in_shape = self.shapes.get(main_in, ())
        out_shape = self.shapes.get(n["outputs"][0], ())
        act_dtype = dtype if op not in _QUANT_OPS else None
        act_bytes = sum(self._bytes(a, act_dtype) for a in acts)
        if op == "QuantizeLinear":
            act_bytes += self._bytes(n["outputs"][0], "int8")
        else:
            act_bytes += self._bytes(out, act_dtype)
        for e in extra:  # residual operands read by a fused Add
            for a in e["inputs"]:
                if (
                    a
                    and a not in self.const
                    and a not in n["outputs"]
                    and a not in {o for x in extra for o in x["outputs"]}
                ):
                    act_bytes += self._bytes(a, act_dtype)
        weight_bytes = 0.0
        for w in n["inputs"][1:]:
            if w and w in self.const:
                per = 1 if self.const_elem.get(w) in (2, 3) else 4
                if self.const_elem.get(w) == 6:
                    per = 4
                weight_bytes += _numel(self.shapes.get(w, ())) * per
        kernel_size, stride, groups = (1, 1), (1, 1), 1
        cin = int(in_shape[1]) if len(in_shape) >= 2 else (int(in_shape[-1]) if in_shape else 0)
        cout = int(out_shape[1]) if len(out_shape) >= 2 else cin
        out_numel = _numel(out_shape)
        macs: float
        if op in _CONV_OPS:
            w_shape = self.shapes.get(n["inputs"][1], ())
            groups = int(attrs.get("group", 1))
            kernel_size = _pair(w_shape[2:]) if len(w_shape) > 2 else (1, 1)
            stride = _pair(attrs.get("strides", [1]))
            per_out = (_numel(w_shape[1:]) if w_shape else 1) if op == "Conv" else 1
            if op == "ConvTranspose":
                per_out = _numel(w_shape[2:]) * (w_shape[0] // max(groups, 1) if w_shape else 1)
                macs = float(_numel(in_shape) * per_out * (w_shape[1] if w_shape else 1))
            else:
                macs = float(out_numel * per_out)
            if groups > 1 and not is_int8 and not nchwc:
                kind = "gconv"  # NCHW, group by group
            elif groups > 1 and groups == cin:
                kind = "dwconv"
            elif kernel_size == (1, 1):
                kind = "conv1x1"
            else:
                kind = "conv"
        elif op in _GEMM_OPS:
            b_shape = self.shapes.get(n["inputs"][1], ()) if len(n["inputs"]) > 1 else ()
            if op == "Gemm":
                k_dim = int(b_shape[1] if attrs.get("transB", 0) else b_shape[0]) if b_shape else 1
            else:
                k_dim = (
                    int(b_shape[-2]) if len(b_shape) >= 2 else (int(b_shape[0]) if b_shape else 1)
                )
            macs = float(out_numel * k_dim)
            cin, cout = k_dim, int(out_shape[-1]) if out_shape else 1
            kind = "gemm"
        elif op in _POOL_OPS:
            if op.startswith("Global"):
                macs = float(_numel(in_shape))
            else:
                kernel_size = _pair(attrs.get("kernel_shape", [1]))
                stride = _pair(attrs.get("strides", [1]))
                macs = float(out_numel * kernel_size[0] * kernel_size[1])
            kind = "pool"
        elif op in _QUANT_OPS:
            macs, kind = float(out_numel), "quant"
        elif op in _ELTWISE_OPS:
            macs, kind = float(out_numel), "eltwise"
        elif op in _MEMORY_OPS:
            macs, kind = 0.0, "memory"
        elif op in _REDUCE_OPS:
            macs, kind = float(max(_numel(in_shape), out_numel)), "reduce"
        else:
            macs, kind = float(max(_numel(in_shape), out_numel)), "other"
        runtime_op = _INT8_NAMES.get(op, op) if is_int8 else op
        if extra and op in _CONV_OPS and not is_int8:
            runtime_op = "FusedConv"
        elif extra and op == "MatMul":
            runtime_op = "Gemm"
        return KernelFeatures(
            op=runtime_op,
            source_op=op,
            kind=kind,
            dtype=dtype,
            input_shape=tuple(int(d) for d in in_shape),
            output_shape=tuple(int(d) for d in self.shapes.get(out, out_shape)),
            kernel_size=kernel_size,
            stride=stride,
            groups=groups,
            in_channels=cin,
            out_channels=cout,
            macs=macs,
            weight_bytes=float(weight_bytes),
            activation_bytes=float(act_bytes),
            fused=tuple(e["op"] for e in extra),
            nodes=(n["name"], *(e["name"] for e in extra)),
        )
