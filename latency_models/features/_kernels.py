"""The records a graph featurizes to: the kernels the runtime runs, and graph totals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

FEATURE_VERSION = 9
"""Version of the featurization; part of every saved predictor and stored feature record.

What each version changed: CHANGELOG.md."""

COMPUTE_KINDS = ("conv", "conv1x1", "dwconv", "gemm", "gconv")
"""Kernel kinds that do multiply-adds; ``kernel_fields`` codes them by position (others -1)."""


NCHWC_ALIGN = 4
"""Channel multiple onnxruntime pads up to whole NCHWc blocks; other channel counts stay NCHW."""

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
