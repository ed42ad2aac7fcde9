from __future__ import annotations

from latency_models import (
    ENERGY_SOURCE,
    estimate_energy_mj,
    graph_features,
    kernel_graph,
    quantize_qdq,
)


def test_energy_estimate_is_positive_and_int8_cheaper() -> None:
    g = kernel_graph("conv", cin=32, cout=32, size=16)
    e32 = estimate_energy_mj(g)
    e8 = estimate_energy_mj(quantize_qdq(g))
    assert e32 > 0 and e8 > 0
    assert e8 < e32
    # fp32 arithmetic alone: MACs x 4.6 pJ
    macs = graph_features(g).totals["macs_fp32"]
    assert e32 >= macs * 4.6e-9


def test_energy_is_labelled_estimated() -> None:
    assert ENERGY_SOURCE == "estimated"
