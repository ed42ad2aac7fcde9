"""The channel block of onnxruntime's NCHWc layout on the CPU that runs the graphs.

onnxruntime's CPU provider runs fp32 convolutions in a blocked layout, NCHWc: channels in
blocks of one vector register, 16 floats where the CPU has AVX-512F and 8 where it has only
AVX2. The block decides which convolutions and pools run blocked and so where the layout
reorders go (the features follow them): a max pool over 40 channels runs NCHWc on an
AVX2 CPU and NCHW, between two reorders, on an AVX-512 one. With the block fixed at 16, the
kernel lists of 74 of the 456 graphs of ``experiments/predictor_accuracy.py`` differed from
the optimised graph onnxruntime 1.32 wrote on an AVX2-only AMD EPYC (VGG-11 and MobileNetV2
at widths 0.6 and 0.9 among them); with the host's block, 3 did.

The block is a property of the machine that runs the graph. Each measurement records the
block of the host that measured it (``host_info["nchwc_block"]``, from
:func:`host_nchwc_block` there, or the CPU's flags on a stand-alone agent), and a device's
stored graphs are featurized with it (:func:`~latency_models.predictors._persist.training_data`,
``hwnas device profile``), so a device measured through an agent or a Ray node is laid out
for that machine, not for the one fitting the predictor; a fitted predictor keeps its block.
Here the block is found by asking onnxruntime (the channels it pads a small convolution's
weights to), else from the CPU's flags; ``HWNAS_NCHWC_BLOCK`` overrides it.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

NCHWC_BLOCKS = (8, 16)
"""Blocks onnxruntime's x86-64 kernels use (AVX2, AVX-512F)."""


@functools.lru_cache(maxsize=1)
def host_nchwc_block() -> int:
    """This machine's NCHWc channel block (8 or 16); ``HWNAS_NCHWC_BLOCK`` overrides it.

    Raises:
        ValueError: ``HWNAS_NCHWC_BLOCK`` is set to something other than 8 or 16.
    """
    env = os.environ.get("HWNAS_NCHWC_BLOCK")
    if env is not None:
        if env.strip() not in {str(b) for b in NCHWC_BLOCKS}:
            raise ValueError(
                f"HWNAS_NCHWC_BLOCK must be one of {list(NCHWC_BLOCKS)}, got {env!r}. Use 16 "
                f"for a CPU with AVX-512F, 8 for one with AVX2 only, or unset it to detect it."
            )
        return int(env)
    # a copied stand-alone agent reads the CPU's flags: onnx may not be there
    probed = _probe_onnxruntime() if __package__ else None
    return probed or nchwc_block_from_cpu_flags()


def _probe_onnxruntime() -> int | None:
    """The output channels onnxruntime pads a 4-channel fp32 conv's weights to, or None."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.0] * 108)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "nchwc_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimised.onnx"
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3  # its warning about hardware-specific graphs
        try:
            ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            optimised = onnx.load(str(out))
        except Exception:  # a runtime that cannot write its graph: use the CPU flags
            return None
    for init in optimised.graph.initializer:
        if len(init.dims) == 4 and int(init.dims[0]) in NCHWC_BLOCKS:
            return int(init.dims[0])
    return None


def nchwc_block_from_cpu_flags() -> int:
    """16 if ``/proc/cpuinfo`` lists ``avx512f`` (onnxruntime's AVX-512F kernels), else 8."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8
