"""The fusion pass: fold constants, recognise QDQ integer kernels, fuse fp32 chains.

Rules and the onnxruntime behaviour they copy: :mod:`latency_models.features._features`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from latency_models.features._kernel_build import build_kernel
from latency_models.features._kernels import (
    NCHWC_ALIGN,
    GraphFeatures,
    KernelFeatures,
    graph_totals,
)
from latency_models.features._layout import layout_kernels
from latency_models.features._onnx_ops import (
    ACT_OPS,
    CONV_OPS,
    GEMM_OPS,
    POOL_OPS,
    QDQ_CAPABLE,
    QDQ_VANISH,
    QUANT_OPS,
)
from latency_models.features._tensors import GraphTensors

if TYPE_CHECKING:
    import onnx

Node = dict[str, Any]


@dataclass
class _Integer:
    """Outcome of the QDQ step: which nodes run as integer kernels, which vanish."""

    int8: set[int] = field(default_factory=set)
    vanish: set[int] = field(default_factory=set)  # Relu/Clip folded into a quantization range
    absorbed: set[int] = field(default_factory=set)  # nodes that run as no kernel of their own
    quantize_first: dict[int, int] = field(default_factory=dict)  # pool -> its moved Q


class Fuser:
    """One pass over a graph, giving the kernels onnxruntime runs for it (:meth:`run`)."""

    def __init__(self, model: onnx.ModelProto, batch_size: int, block: int) -> None:
        self.graph = model.graph
        self.block = block
        self.t = GraphTensors(model, batch_size)
        self.nodes: list[Node] = []
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        # ordered (a dict): the reorders after the outputs come in the graph's output order,
        # not in a set's, which changes from process to process
        self.graph_outputs: dict[str, None] = {}
        self._nchwc: set[int] = set()  # fp32 conv nodes onnxruntime runs NCHWc

    def run(self) -> GraphFeatures:
        """The graph's features.

        Raises:
            ValueError: ONNX shape inference fails on the graph.
        """
        self.t.infer_shapes()
        self.nodes = self._live_nodes()
        for idx, n in enumerate(self.nodes):
            for o in n["outputs"]:
                self.producer[o] = idx
            for i in n["inputs"]:
                if i:
                    self.consumers.setdefault(i, []).append(idx)
        self.graph_outputs = dict.fromkeys(self.t.resolve(o.name) for o in self.graph.output)
        integer = self._integer_kernels()
        fused_into = self._fp32_fusions(integer)
        return self._emit(integer, fused_into)

    def _live_nodes(self) -> list[Node]:
        """The nodes that run: constants folded, ``Identity``/``Dropout`` made aliases."""
        from onnx import helper

        t = self.t
        nodes = []
        for node in self.graph.node:
            inputs = [t.resolve(i) for i in node.input]
            op = node.op_type
            if op in ("Identity", "Dropout") and inputs and inputs[0]:
                t.alias[node.output[0]] = inputs[0]
                continue
            if op == "Constant" or (
                node.input
                and all((not i) or i in t.const for i in inputs)
                and op not in ("RandomNormal", "RandomUniform")
            ):
                for o in node.output:
                    t.const.add(o)
                passes_dtype = op in ("DequantizeLinear", "Transpose", "Reshape", "Cast")
                if passes_dtype and inputs[0] in t.const_elem:
                    t.const_elem[node.output[0]] = t.const_elem[inputs[0]]
                continue
            if op == "Shape" and inputs and t.static_shape(inputs[0]):
                t.const.add(node.output[0])
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
        return nodes

    def _prod_op(self, name: str) -> str | None:
        idx = self.producer.get(name)
        return None if idx is None else self.nodes[idx]["op"]

    def _acts(self, n: Node) -> list[str]:
        """The activation (non-constant) inputs of ``n``."""
        return [i for i in n["inputs"] if i and i not in self.t.const]

    def _only_quantized_by(self, tensor: str) -> bool:
        cs = self.consumers.get(tensor, [])
        return bool(cs) and all(self.nodes[c]["op"] == "QuantizeLinear" for c in cs)

    def _integer_kernels(self) -> _Integer:
        """Step 1, QDQ: which compute nodes run as integer kernels, which Q/DQ vanish."""
        nodes, out = self.nodes, _Integer()
        for idx, n in enumerate(nodes):
            op = n["op"]
            if op not in QDQ_CAPABLE and op not in QDQ_VANISH:
                continue
            acts = self._acts(n)
            if not acts or not all(self._prod_op(a) == "DequantizeLinear" for a in acts):
                continue
            outs_to_q = all(self._only_quantized_by(o) for o in n["outputs"][:1])
            if op in CONV_OPS or op in GEMM_OPS:
                weights = [i for i in n["inputs"][1:2] if i]
                w_int8 = any(self.t.const_elem.get(w) in (2, 3) for w in weights)
                if op == "MatMul" and not weights:
                    w_int8 = False
                if op == "MatMul" and len(acts) == 2:
                    w_int8 = True  # activation x activation, both quantized
                # Conv -> Relu/Clip -> Q: the activation folds into the quantization range.
                act_to_q = None
                cs = self.consumers.get(n["outputs"][0], [])
                if (
                    len(cs) == 1
                    and nodes[cs[0]]["op"] in QDQ_VANISH
                    and self._only_quantized_by(nodes[cs[0]]["outputs"][0])
                ):
                    act_to_q = cs[0]
                # onnxruntime quantizes a float weight itself when the activations are QDQ
                # on both sides (a conv left out by nodes_to_exclude still runs as integer).
                if (outs_to_q or act_to_q is not None) or (w_int8 and op in GEMM_OPS):
                    out.int8.add(idx)
                    if act_to_q is not None:
                        out.vanish.add(act_to_q)
            elif outs_to_q:
                (out.vanish if op in QDQ_VANISH else out.int8).add(idx)
        # onnxruntime moves a QuantizeLinear that alone reads a float MaxPool's output ahead
        # of the pool (QDQ propagation): the pool then runs on the quantized tensor, NCHW.
        for idx, n in enumerate(nodes):
            cs = self.consumers.get(n["outputs"][0], []) if n["outputs"] else []
            if (
                n["op"] == "MaxPool"
                and idx not in out.int8
                and len(cs) == 1
                and nodes[cs[0]]["op"] == "QuantizeLinear"
                and n["outputs"][0] not in self.graph_outputs
            ):
                out.int8.add(idx)
                out.quantize_first[idx] = cs[0]
        out.absorbed = set(out.vanish)
        for idx, n in enumerate(nodes):
            if n["op"] == "DequantizeLinear":
                cs = self.consumers.get(n["outputs"][0], [])
                if cs and all(c in out.int8 or c in out.vanish for c in cs):
                    out.absorbed.add(idx)
            elif n["op"] == "QuantizeLinear":
                src = self.producer.get(n["inputs"][0])
                if src is not None and (src in out.int8 or src in out.vanish):
                    out.absorbed.add(idx)
                elif src is not None and nodes[src]["op"] == "DequantizeLinear":
                    out.absorbed.add(idx)  # DQ -> Q pairs cancel out
                    if self._only_quantized_by(nodes[src]["outputs"][0]):
                        out.absorbed.add(src)
        return out

    def _fp32_fusions(self, integer: _Integer) -> dict[int, list[int]]:
        """Step 2: fp32 nodes fused onto a conv or gemm (adds them to ``integer.absorbed``).

        Returns:
            Conv/gemm node index -> the node indices fused into it, in order.
        """
        nodes, int8, absorbed = self.nodes, integer.int8, integer.absorbed
        nchwc_conv = {idx for idx, n in enumerate(nodes) if self.nchwc_conv(n)}
        fused_into: dict[int, list[int]] = {}
        owner: dict[str, int] = {}  # tensor -> fused kernel that now produces it

        def producer_of(t: str) -> int | None:
            j = owner.get(t, self.producer.get(t))
            return None if j is None or j in int8 or j in absorbed else j

        def nchwc_made(t: str) -> bool:
            """Whether an fp32 kernel that keeps the NCHWc layout produces ``t``."""
            j = producer_of(t)
            if j is None:
                return False
            op = nodes[j]["op"]
            return j in nchwc_conv or (op in POOL_OPS and self.t.channels(t) % self.block == 0)

        for idx, n in enumerate(nodes):
            op = n["op"]
            acts = self._acts(n)
            if idx in absorbed or idx in int8 or op in QUANT_OPS or not acts:
                continue
            src = producer_of(acts[0])
            if len(self.consumers.get(acts[0], [])) != 1 or acts[0] in self.graph_outputs:
                src = None
            chain = [nodes[j]["op"] for j in fused_into.get(src, [])] if src is not None else []
            has_act = any(c in ACT_OPS for c in chain)
            base = nodes[src]["op"] if src is not None else None
            fuse = False
            if base in CONV_OPS:
                fuse = (
                    (op == "BatchNormalization" and not chain)
                    or (op in ACT_OPS and not has_act)
                    # bias / scale by a constant
                    or (op in ("Add", "Mul") and len(acts) == 1 and not chain)
                    # residual sum (onnxruntime's NCHWc conv with Sum, whole channel blocks);
                    # an NCHWc conv sums whole blocks, an NCHW one takes any operand
                    or (
                        op == "Add"
                        and len(acts) == 2
                        and "Add" not in chain
                        and not has_act
                        and (nchwc_made(acts[1]) or src not in nchwc_conv)
                    )
                )
            elif base in ("MatMul", "Gemm"):
                fuse = not chain and (
                    (base == "MatMul" and op == "Add" and len(acts) == 1)
                    or (base == "Gemm" and op in ACT_OPS)
                )
            if not fuse and op == "Add" and len(acts) == 2:
                # residual where the conv is the second input
                src2 = producer_of(acts[1])
                chain2 = (
                    [nodes[j]["op"] for j in fused_into.get(src2, [])] if src2 is not None else []
                )
                if (
                    src2 is not None
                    and nodes[src2]["op"] in CONV_OPS
                    and len(self.consumers.get(acts[1], [])) == 1
                    and "Add" not in chain2
                    and not any(c in ACT_OPS for c in chain2)
                    and (nchwc_made(acts[0]) or src2 not in nchwc_conv)
                ):
                    src, fuse = src2, True
            if fuse and src is not None:
                fused_into.setdefault(src, []).append(idx)
                absorbed.add(idx)
                for o in n["outputs"]:
                    owner[o] = src
        self._nchwc = nchwc_conv
        return fused_into

    def _emit(self, integer: _Integer, fused_into: dict[int, list[int]]) -> GraphFeatures:
        """Step 3: the kernels, where each reads its activations from, and the layouts."""
        nodes, t = self.nodes, self.t
        kernels: list[KernelFeatures] = []
        unknown: list[str] = []
        made_by: dict[str, int] = {}  # tensor -> index in kernels of the kernel producing it
        kernel_inputs: list[list[str]] = []
        nchwc_convs: set[int] = set()  # kernels that are fp32 convs onnxruntime runs NCHWc
        for idx, n in enumerate(nodes):
            if idx in integer.absorbed:
                continue
            extra = fused_into.get(idx, [])
            if idx in integer.quantize_first:  # the moved QuantizeLinear, on the pool's input
                q = nodes[integer.quantize_first[idx]]
                moved = f"{n['inputs'][0]}/quantized"
                t.shapes[moved] = t.shapes.get(n["inputs"][0], ())
                qn = {**q, "name": "", "inputs": [n["inputs"][0], *q["inputs"][1:]],
                      "outputs": [moved]}  # fmt: skip
                made_by[moved] = len(kernels)
                kernel_inputs.append([n["inputs"][0]])
                k = build_kernel(t, qn, is_int8=False, nchwc=False, extra=[], out=moved)
                kernels.append(replace(k, nodes=()))
                n = {**n, "inputs": [moved, *n["inputs"][1:]]}
            out = n["outputs"][-1] if not extra else nodes[extra[-1]]["outputs"][0]
            is_int8 = idx in integer.int8
            nchwc = not is_int8 and idx in self._nchwc
            k = build_kernel(
                t, n, is_int8=is_int8, nchwc=nchwc, extra=[nodes[j] for j in extra], out=out
            )
            if k.kind == "other" and k.source_op not in unknown:
                unknown.append(k.source_op)
            for o in [*n["outputs"], *(o for j in extra for o in nodes[j]["outputs"])]:
                made_by[o] = len(kernels)
            chain_out = {o for j in [idx, *extra] for o in nodes[j]["outputs"]}
            kernel_inputs.append(
                # a fused residual Add's other operand is read by the kernel too
                [
                    *self._acts(n),
                    *(a for j in extra for a in self._acts(nodes[j]) if a not in chain_out),
                ]
            )
            if nchwc:
                nchwc_convs.add(len(kernels))
            kernels.append(k)
        # Absorbed Q/DQ and vanished Relu/Clip pass their input tensor through.
        passthrough = {
            nodes[i]["outputs"][0]: nodes[i]["inputs"][0]
            for i in integer.absorbed
            if nodes[i]["op"] in QUANT_OPS or i in integer.vanish
        }
        kernels = layout_kernels(
            t, self.block, kernels, kernel_inputs, nchwc_convs, made_by, passthrough,
            self.graph_outputs,
        )  # fmt: skip
        return GraphFeatures(
            kernels=tuple(kernels),
            totals={**graph_totals(kernels), "nchwc_block": float(self.block)},
            unknown_ops=tuple(unknown),
        )

    def nchwc_conv(self, n: Node) -> bool:
        """Whether onnxruntime runs this fp32 ``Conv`` node in the NCHWc layout.

        Measured on onnxruntime 1.32 (AVX-512, block 16) by reading its optimised graph for
        single convs of every channel count up to 48: a conv with constant 4-D weights is
        rewritten when its input channels are fewer than one block (read as NCHW) or a
        multiple of :data:`NCHWC_ALIGN` (padded to whole blocks); a depthwise conv when its
        channels are a multiple of :data:`NCHWC_ALIGN`; another grouped conv when each
        group has whole blocks in and out. Other convs (27 or 34 channels, say) stay NCHW.
        """
        if n["op"] != "Conv" or len(n["inputs"]) < 2 or n["inputs"][1] not in self.t.const:
            return False
        w = self.t.shapes.get(n["inputs"][1], ())
        if len(w) != 4:
            return False
        cout, cin, groups = int(w[0]), int(w[1]), int(n["attrs"].get("group", 1))
        if groups == 1:
            return cin < self.block or cin % NCHWC_ALIGN == 0
        if cin == 1 and cout == groups:
            return cout % NCHWC_ALIGN == 0
        return cin % self.block == 0 and cout % groups == 0 and (cout // groups) % self.block == 0
