"""Energy per inference *estimated* from operation counts, for devices without a meter.

The number is a first-order model, never a measurement: every result of
:func:`estimate_energy_mj` is labelled ``"estimated"`` wherever hwnas reports it.

Constants (per operation, 45 nm CMOS at 0.9 V) from M. Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014, Figure 1.1.9:

======================  =========
operation               energy
======================  =========
8-bit int add           0.03 pJ
8-bit int multiply      0.2 pJ
32-bit float add        0.9 pJ
32-bit float multiply   3.7 pJ
32-bit SRAM read (8 KB) 5 pJ
32-bit DRAM read        640 pJ
======================  =========

Model: ``E = MACs_fp32 * (3.7 + 0.9) + MACs_int8 * (0.2 + 0.03)`` for arithmetic, plus
every activation byte moved through on-chip SRAM (5 pJ per 4 bytes), plus every weight byte
read once from DRAM (640 pJ per 4 bytes; weights rarely stay cached across inferences of a
big model, activations mostly do). Absolute values on a modern CPU differ (other process
nodes, instruction overheads dominate); the ratios between candidate graphs are what the
search uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latency_models.features._features import GraphFeatures, graph_features

if TYPE_CHECKING:
    from latency_models._graph import GraphLike

ENERGY_SOURCE = "estimated"
"""The label every analytic energy figure carries."""

PJ_FP32_MAC = 3.7 + 0.9  # Horowitz ISSCC 2014: fp32 mult + fp32 add
PJ_INT8_MAC = 0.2 + 0.03  # int8 mult + int8 add
PJ_SRAM_PER_BYTE = 5.0 / 4  # 32-bit read from an 8 KB SRAM
PJ_DRAM_PER_BYTE = 640.0 / 4  # 32-bit DRAM read


def estimate_energy_mj(graph: GraphLike | GraphFeatures) -> float:
    """Estimated energy of one inference, in millijoules (label: ``"estimated"``).

    Args:
        graph: A ModelProto, ``.onnx`` path, bytes, or its :class:`GraphFeatures`.

    Returns:
        Energy in mJ from the Horowitz 45 nm constants (see the module docstring).
    """
    f = graph_features(graph)
    t = f.totals
    pj = (
        t["macs_fp32"] * PJ_FP32_MAC
        + t["macs_int8"] * PJ_INT8_MAC
        + t["activation_bytes"] * PJ_SRAM_PER_BYTE
        + t["weight_bytes"] * PJ_DRAM_PER_BYTE
    )
    return float(pj * 1e-9)  # pJ -> mJ
