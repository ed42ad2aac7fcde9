from __future__ import annotations

import pytest

from latency_models import (
    PREDICTORS,
    IncompatibleArtifactError,
    graph_features,
    kernel_graph,
    random_network,
)
from latency_models.measurement._bench import host_info
from latency_models.measurement._host import (
    _probe_onnxruntime,
    host_nchwc_block,
    nchwc_block_from_cpu_flags,
)


def test_onnxruntime_and_the_cpu_flags_agree_on_this_hosts_block() -> None:
    assert _probe_onnxruntime() == nchwc_block_from_cpu_flags() == host_nchwc_block()
    assert host_info()["nchwc_block"] == str(host_nchwc_block())  # each measurement keeps it


def test_the_block_can_be_set_for_another_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    host_nchwc_block.cache_clear()
    try:
        monkeypatch.setenv("HWNAS_NCHWC_BLOCK", "16")
        assert host_nchwc_block() == 16
        host_nchwc_block.cache_clear()
        monkeypatch.setenv("HWNAS_NCHWC_BLOCK", "12")
        with pytest.raises(ValueError, match="HWNAS_NCHWC_BLOCK must be one of"):
            host_nchwc_block()
    finally:
        host_nchwc_block.cache_clear()
    with pytest.raises(ValueError, match="nchwc_block must be one of"):
        graph_features(kernel_graph("conv", cin=8, cout=8, size=8), nchwc_block=4)


def test_a_predictor_keeps_the_block_it_was_fit_for() -> None:
    graphs = [random_network(s, size=16) for s in range(12)]
    other = 24 - host_nchwc_block()  # the block of the other kind of x86-64 CPU
    feats = [graph_features(g, nchwc_block=other) for g in graphs]
    y = [0.01 * (1 + f.totals["macs"] / 1e6) for f in feats]
    p = PREDICTORS.get("additive")().fit(feats, y)
    assert p.nchwc_block_ == other
    # graphs are laid out for the block it was fit for, not this machine's
    assert list(p.predict(graphs)) == list(p.predict_features(feats))
    with pytest.raises(IncompatibleArtifactError, match=f"nchwc_block={other}"):
        p.predict_features([graph_features(graphs[0])])
    with pytest.raises(ValueError, match="different NCHWc blocks"):
        PREDICTORS.get("additive")().fit([*feats, graph_features(graphs[0])], [*y, 0.01])
