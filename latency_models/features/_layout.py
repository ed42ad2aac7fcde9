"""The layout conversions onnxruntime's CPU provider inserts between kernels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from latency_models.features._kernels import KernelFeatures
from latency_models.features._onnx_ops import CONV_OPS, numel
from latency_models.features._tensors import GraphTensors


def layout_kernels(
    tensors: GraphTensors,
    block: int,
    kernels: list[KernelFeatures],
    kernel_inputs: list[list[str]],
    nchwc_convs: set[int],
    made_by: dict[str, int],
    passthrough: dict[str, str],
    graph_outputs: Mapping[str, None],
) -> list[KernelFeatures]:
    """Insert the layout conversions onnxruntime's CPU provider adds between kernels.

    fp32 convs run in the blocked NCHWc layout (``block`` channels a block, the
    CPU's: :func:`~latency_models.measurement._host.host_nchwc_block`), so do fp32 pools whose
    channels are a multiple of the block and element-wise ops between
    NCHWc tensors. int8 convs run channels-last (NHWC), and so do other int8 kernels
    whose inputs all come channels-last: onnxruntime wraps only the integer convs in
    transposes and pushes those forward through the ops they feed, so an int8 pool or
    add fed from the fp32 side stays NCHW. A tensor crossing from one
    layout to another costs a ``ReorderInput``/``ReorderOutput`` (fp32) or a
    ``Transpose`` (int8) over the whole tensor. An fp32 conv with fewer than
    ``block`` input channels reads NCHW directly. Found by reading the
    optimised graphs onnxruntime 1.32 writes (``optimized_model_filepath``).
    """
    graph = _LayoutPass(tensors, block, kernels, kernel_inputs, made_by, passthrough)
    layouts = graph.layouts(nchwc_convs)
    for i, k in enumerate(kernels):
        for pos, t in enumerate(kernel_inputs[i]):
            src, j = graph.source(t, int8=layouts[i] == "nhwc")
            # only the main input may be read NCHW directly, not a fused Add's operand
            graph.convert(
                src,
                layouts[j] if j is not None else "nchw",
                layouts[i],
                k if pos == 0 else None,
            )
        if k.source_op == "MaxPool" and k.dtype == "int8" and layouts[i] == "nchw":
            k = replace(k, kind="qpool")  # onnxruntime's generic loop, not NhwcMaxPool
        graph.out.append(k)
    for t in graph_outputs:
        src, j = graph.source(t)
        if j is not None:
            graph.convert(src, layouts[j], "nchw", None)
    return graph.out


@dataclass
class _LayoutPass:
    """The kernels of one graph, with the conversions found so far in ``out``."""

    tensors: GraphTensors
    block: int
    kernels: list[KernelFeatures]
    kernel_inputs: list[list[str]]
    made_by: dict[str, int]
    passthrough: dict[str, str]
    out: list[KernelFeatures] = field(default_factory=list)
    done: set[tuple[str, str]] = field(default_factory=set)

    def source(self, t: str, int8: bool = False) -> tuple[str, int | None]:
        """The tensor a kernel really reads for ``t``, and the kernel that makes it."""
        # An int8 kernel reads the integer tensor behind a DequantizeLinear that is kept
        # for an fp32 consumer: onnxruntime gives the integer kernel its own QDQ pair.
        made_by, kernels = self.made_by, self.kernels
        seen = 0
        while seen < 64:
            if t not in made_by and t in self.passthrough:
                t = self.passthrough[t]
            elif (
                int8
                and t in made_by
                and kernels[made_by[t]].op == "DequantizeLinear"
                and self.kernel_inputs[made_by[t]]
            ):
                t = self.kernel_inputs[made_by[t]][0]
            else:
                break
            seen += 1
        return t, made_by.get(t)

    def layouts(self, nchwc_convs: set[int]) -> list[str]:
        """Each kernel's layout: ``"nchwc"``, ``"nhwc"``, ``"nchw"`` or ``"any"`` (not 4-D)."""
        layouts: list[str] = []
        for i, k in enumerate(self.kernels):
            if len(k.input_shape) != 4:
                layouts.append("any")
            elif k.dtype == "int8" and k.source_op in CONV_OPS:
                layouts.append("nhwc")
            elif k.dtype == "int8" and k.kind not in ("quant", "memory"):
                ins = [self.source(t, int8=True)[1] for t in self.kernel_inputs[i]]
                ok = all(j is not None and layouts[j] == "nhwc" for j in ins)
                layouts.append("nhwc" if ok and ins else "nchw")
            elif i in nchwc_convs or (
                k.dtype == "fp32" and k.kind == "pool" and k.in_channels % self.block == 0
            ):
                layouts.append("nchwc")
            elif k.source_op in {"Add", "Sum", "Relu", "Clip"} and k.dtype == "fp32":
                ins = [self.source(t)[1] for t in self.kernel_inputs[i]]
                ok = all(j is not None and layouts[j] == "nchwc" for j in ins)
                layouts.append("nchwc" if ok and ins else "nchw")
            else:
                layouts.append("nchw")
        return layouts

    def convert(self, t: str, frm: str, to: str, consumer: KernelFeatures | None) -> None:
        """Add the conversion of tensor ``t`` from layout ``frm`` to ``to``, once, if any."""
        if (
            to == "nchwc"
            and consumer is not None
            and consumer.source_op == "Conv"
            and consumer.kind != "dwconv"
            and consumer.in_channels < self.block
        ):
            to = "nchw"  # the conv reads NCHW input directly
        if frm == to or "any" in (frm, to) or (t, to) in self.done:
            return
        shape = self.tensors.shapes.get(t, ())
        if len(shape) != 4:
            return
        self.done.add((t, to))
        int8_edge = "nhwc" in (frm, to)
        op = "Transpose" if int8_edge else ("ReorderInput" if to == "nchwc" else "ReorderOutput")
        nbytes = float(numel(shape) * (1 if int8_edge else 4))
        self.out.append(
            KernelFeatures(
                op=op, source_op=op, kind="layout", dtype="int8" if int8_edge else "fp32",
                input_shape=shape, output_shape=shape, in_channels=int(shape[1]),
                out_channels=int(shape[1]), macs=0.0, activation_bytes=2 * nbytes,
            )
        )  # fmt: skip
