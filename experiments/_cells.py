"""Cell-based CNNs in the style of NAS-Bench-201, written as ONNX with ``onnx.helper``.

A network is a stem conv, three stages of ``cells_per_stage`` copies of one cell, residual
reduction blocks between stages, and a pooled linear head. A cell is a 4-node DAG: node 0 is
its input, node j sums one op per earlier node; each of the 6 edges takes an op from
``none`` (no edge), ``skip``, ``conv1x1``, ``conv3x3`` or ``avgpool3x3`` (convs are
ReLU-Conv-BN). A node with no incoming edge is a zero tensor (an initializer), so a cell
whose every input path is ``none`` has an output that does not depend on the network input:
the whole network then depends only on constants, and a constant-folding runtime measures
it near zero. Networks come in *families* (stem width, depth, input size, channel growth,
batch norm) so that whole families can be held out of a fit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from node, to node)


@dataclass(frozen=True)
class CellFamily:
    """Macro-architecture shared by a family of networks; the cell varies within it."""

    name: str
    stem_channels: int
    cells_per_stage: int
    resolution: int
    growth: float  # channel multiplier at each reduction
    batchnorm: bool = True
    stages: int = 3


FAMILIES: tuple[CellFamily, ...] = (
    CellFamily("c16-n2-r48", 16, 2, 48, 2.0),
    CellFamily("c24-n1-r48", 24, 1, 48, 2.0, batchnorm=False),
    CellFamily("c32-n1-r32", 32, 1, 32, 2.0),
    CellFamily("c16-n3-r32", 16, 3, 32, 2.0, batchnorm=False),
    CellFamily("c24-n2-r32", 24, 2, 32, 2.0),
    CellFamily("c32-n2-r24-g1.5", 32, 2, 24, 1.5),
    CellFamily("c16-n2-r64-g1.5", 16, 2, 64, 1.5, batchnorm=False),
    CellFamily("c24-n2-r40", 24, 2, 40, 2.0),
    CellFamily("c40-n1-r32-g1.5", 40, 1, 32, 1.5, batchnorm=False),
    CellFamily("c48-n1-r24", 48, 1, 24, 2.0),
    CellFamily("c12-n4-r40", 12, 4, 40, 2.0),
    CellFamily("c20-n3-r48-g1.5", 20, 3, 48, 1.5, batchnorm=False),
)

UNALIGNED_SEEN: tuple[CellFamily, ...] = tuple(
    {
        "c16-n3-r32": CellFamily("c26-n3-r32-g1.5", 26, 3, 32, 1.5, batchnorm=False),
        "c24-n2-r32": CellFamily("c28-n2-r32", 28, 2, 32, 2.0),
    }.get(f.name, f)
    for f in FAMILIES
)
"""FAMILIES with two seen families at channel counts that fit no SIMD block (26/39/58 and
28/56/112), so that training covers what the held-out families run into."""


@dataclass(frozen=True)
class CellGraph:
    """One generated network: its name, family, cell genotype and serialized ONNX."""

    name: str
    family: str
    genotype: tuple[str, ...]  # one op per edge of EDGES
    cut: bool  # the cell output does not depend on its input
    model_bytes: bytes

    @property
    def digest(self) -> str:
        """Content hash of the ONNX bytes: a cache key for measurements."""
        return hashlib.sha256(self.model_bytes).hexdigest()[:16]


def is_cut(genotype: tuple[str, ...]) -> bool:
    """Whether no path of non-``none`` edges leads from the cell input to its output."""
    reach = [True, False, False, False]
    for (src, dst), op in zip(EDGES, genotype, strict=True):
        if op != "none" and reach[src]:
            reach[dst] = True
    return not reach[3]


def random_genotype(rng: np.random.Generator, *, cut: bool | None = None) -> tuple[str, ...]:
    """A random cell; ``cut`` forces (True) or forbids (False) a cut-off output."""
    while True:
        genotype = tuple(str(rng.choice(OPS)) for _ in EDGES)
        if cut is None or is_cut(genotype) == cut:
            return genotype


def generate_graphs(
    n: int,
    *,
    seed: int = 0,
    families: tuple[CellFamily, ...] = FAMILIES,
    cut_share: float = 0.03,
) -> list[CellGraph]:
    """``n`` networks, families taken in turn, about ``cut_share`` of them with a cut cell."""
    rng = np.random.default_rng(seed)
    graphs = []
    for i in range(n):
        family = families[i % len(families)]
        genotype = random_genotype(rng, cut=bool(rng.random() < cut_share))
        name = f"{family.name}-{i:04d}-" + "-".join(_SHORT[op] for op in genotype)
        model = build_network(family, genotype, seed=seed * 100_003 + i, name=name)
        graphs.append(
            CellGraph(name, family.name, genotype, is_cut(genotype), model.SerializeToString())
        )
    return graphs


_SHORT = {"none": "n", "skip": "s", "conv1x1": "c1", "conv3x3": "c3", "avgpool3x3": "p"}


def build_network(
    family: CellFamily, genotype: tuple[str, ...], *, seed: int, name: str
) -> onnx.ModelProto:
    """The ONNX model of one network (batch 1, static shapes, random float32 weights)."""
    b = _Builder(np.random.default_rng(seed), batchnorm=family.batchnorm)
    c, hw = family.stem_channels, family.resolution
    hw0 = hw
    x = b.conv("input", 3, c, 3, stride=1, relu=False)
    for stage in range(family.stages):
        if stage > 0:
            c_out = round(c * family.growth)
            x, hw = b.reduction(x, c, c_out, hw), hw // 2
            c = c_out
        for _ in range(family.cells_per_stage):
            x = b.cell(x, c, hw, genotype)
    x = b.node("Relu", [x])
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = b.init(b.rng.normal(0, (1 / c) ** 0.5, (10, c)))
    bias = b.init(np.zeros(10))
    b.node("Gemm", [x, w, bias], out="logits", transB=1)
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, hw0, hw0])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, rng: np.random.Generator, *, batchnorm: bool) -> None:
        self.rng = rng
        self.batchnorm = batchnorm
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def init(self, array: np.ndarray) -> str:
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], *, out: str | None = None, **attrs: object) -> str:
        out = out or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(
        self, x: str, c_in: int, c_out: int, k: int, *, stride: int, relu: bool = True
    ) -> str:
        if relu:
            x = self.node("Relu", [x])
        w = self.init(self.rng.normal(0, (2 / (c_in * k * k)) ** 0.5, (c_out, c_in, k, k)))
        inputs = [x, w] if self.batchnorm else [x, w, self.init(np.zeros(c_out))]
        pad = k // 2
        x = self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
        if not self.batchnorm:
            return x
        scale = self.init(self.rng.uniform(0.5, 1.5, c_out))
        shift = self.init(self.rng.normal(0, 0.1, c_out))
        mean = self.init(self.rng.normal(0, 0.1, c_out))
        var = self.init(self.rng.uniform(0.5, 1.5, c_out))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=1e-5)

    def edge(self, x: str, op: str, c: int) -> str:
        if op == "skip":
            return x
        if op == "conv1x1":
            return self.conv(x, c, c, 1, stride=1)
        if op == "conv3x3":
            return self.conv(x, c, c, 3, stride=1)
        return self.node(
            "AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
            count_include_pad=0,
        )  # fmt: skip

    def cell(self, x: str, c: int, hw: int, genotype: tuple[str, ...]) -> str:
        values = [x]
        for dst in (1, 2, 3):
            terms = [
                self.edge(values[src], op, c)
                for (src, to), op in zip(EDGES, genotype, strict=True)
                if to == dst and op != "none"
            ]
            if not terms:
                terms = [self.init(np.zeros((1, c, hw, hw)))]
            total = terms[0]
            for t in terms[1:]:
                total = self.node("Add", [total, t])
            values.append(total)
        return values[3]

    def reduction(self, x: str, c_in: int, c_out: int, hw: int) -> str:
        a = self.conv(x, c_in, c_out, 3, stride=2)
        a = self.conv(a, c_out, c_out, 3, stride=1)
        s = self.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        s = self.conv(s, c_in, c_out, 1, stride=1, relu=False)
        return self.node("Add", [a, s])
