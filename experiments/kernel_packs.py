"""Does packing many kernels into each profiled graph help the predictors?

nn-Meter profiles kernels one by one. With onnxruntime's per-kernel profile, one measured
graph can instead carry many independent kernels (each on its own input), so the same
budget of measured graphs covers far more of the shapes real networks use. This script
builds 100 such packs (12 kernels each, 40% int8), measures them like
``predictor_accuracy.py`` does (best of two sessions, plus one profiled session) and
compares training sets of at most 300 measured graphs on the same held-out sets:

- ``sweep300``: the 300 sweep graphs of ``predictor_accuracy.py`` (the default there);
- ``sweep200+packs100``: the first 200 of them plus the 100 packs.

For each: ``kernel`` alone, ``additive``, and their log-mix at kernel weights 0.25 and 0.5.

    HWNAS_HOME=/tmp/hwnas-home-acc2 python experiments/kernel_packs.py

Run ``predictor_accuracy.py`` first (same ``HWNAS_HOME``): its graphs and measurements are
reused. Writes ``experiments/results/kernel_packs.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import predictor_accuracy as pa

from latency_models import (
    KernelAdditivePredictor,
    KernelPredictor,
    MeasurementStore,
    get_device,
    graph_features,
    prediction_metrics,
    quantize_qdq,
    sweep_graphs,
)
from latency_models._home import home_dir
from latency_models.profiling._builder import OPSET, _Builder, _conv_macs
from latency_models.profiling._sweep import SWEEP_REVISION

PACK_SIZES = (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 112, 224)
"""Output map sizes a pack draws from (those of ImageNet and CIFAR networks)."""
PACK_CHANNELS = (8, 16, 24, 32, 40, 48, 64, 96, 128, 144, 160, 192, 256, 320, 384, 512, 576, 960)
"""Channel counts a pack draws from."""


def kernel_pack(seed: int, n_kernels: int = 12, max_macs: float = 6e7):
    """One graph of ``n_kernels`` independent kernels, each on its own input and output."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng([seed, 7])
    b = _Builder(rng)
    inputs, outputs = [], []
    ops = ["conv", "conv", "dwconv", "dwconv", "conv1x1", "conv1x1", "linear"]
    for j in range(n_kernels):
        for _ in range(100):
            op = str(rng.choice(ops))
            cin, cout = (int(rng.choice(PACK_CHANNELS)) for _ in range(2))
            out = int(rng.choice(PACK_SIZES))
            stride = int(rng.choice([1, 1, 1, 2])) if out <= 112 else 1
            kernel = 1 if op == "conv1x1" else int(rng.choice([3, 3, 3, 5, 7]))
            if op == "linear":
                cin = int(rng.choice([*PACK_CHANNELS, 1024, 1280, 2048]))
                cout = int(rng.choice([10, 100, 1000]))
                macs = float(cin * cout)
            else:
                cout = cin if op == "dwconv" else cout
                macs = _conv_macs(op, cin, cout, out * stride, kernel, stride)
            if macs <= max_macs:
                break
        name = "input" if j == 0 else f"input_{j}"
        if op == "linear":
            shape = [1, cin]
            y = b.linear(name, cin, cout)
        else:
            shape = [1, cin, out * stride, out * stride]
            act = str(rng.choice(["Relu", "Relu6"])) if rng.random() < 0.7 else None
            groups = cin if op == "dwconv" else 1
            y = b.conv(name, cin, cout, kernel, stride=stride, groups=groups, act=act)
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
    graph = helper.make_graph(b.nodes, f"pack{seed}", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def packs(n: int):
    for i in range(n):
        g = kernel_pack(i)
        if i % 5 in (1, 3):
            yield f"pack{i}_int8", quantize_qdq(g, seed=i)
        else:
            yield f"pack{i}_fp32", g


def _labelled(graphs, store: MeasurementStore):
    sessions: dict[str, list[float]] = {}
    times: dict[str, list] = {}
    for r in store.records(with_onnx=False):
        sessions.setdefault(r.graph_hash, []).append(r.measurement.latency_ms)
        if r.measurement.kernel_times:
            times[r.graph_hash] = r.measurement.kernel_times
    hashes = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for _, p in graphs]
    feats = [graph_features(str(p)) for _, p in graphs]
    return feats, np.array([min(sessions[h]) for h in hashes]), [times.get(h) for h in hashes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["local-cpu", "local-cpu-2t"])
    ap.add_argument("--out", type=Path, default=pa.RESULTS / "kernel_packs.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cache = home_dir() / "experiments" / "predictor_accuracy"
    sweep = pa.cached_graphs(
        sweep_graphs(300, seed=0, wide=True), cache / f"train-r{SWEEP_REVISION}"
    )
    pack = pa.cached_graphs(packs(100), cache / "packs")
    test = pa.cached_graphs(pa.ood_graphs([224, 96, 32], 0), cache / "ood")
    second = pa.cached_graphs(pa.more_other_families(), cache / "val")
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "devices": {}}
    for device in args.devices:
        spec = get_device(device)
        pin = [1] if spec.threads == 1 else None
        pa.measure_all(pack, spec.name, 1.0, pin, 2)
        pa.kernel_times(pack, spec.name, 1.0, pin)
        store = MeasurementStore(spec.name)
        sets = {
            "sweep300": _labelled(sweep, store),
            "sweep200+packs100": _labelled(sweep[:200] + pack, store),
        }
        held = {"other_families_72": _labelled(test, store)[:2],
                "second_other_families_36": _labelled(second, store)[:2]}  # fmt: skip
        res: dict = {}
        for set_name, (f, y, kt) in sets.items():
            kernel = KernelPredictor().fit(f, y, kernel_times=kt)
            additive = KernelAdditivePredictor().fit(f, y)
            for w in (0.0, 0.25, 0.5, 1.0):
                row = {}
                for held_name, (hf, hy) in held.items():
                    lk = np.log(kernel.predict_features(hf))
                    la = np.log(additive.predict_features(hf))
                    row[held_name] = prediction_metrics(hy, np.exp(w * lk + (1 - w) * la))
                res[f"{set_name} kernel_weight={w}"] = row
                print(
                    f"{device:13s} {set_name:18s} w={w:<4} "
                    + "  ".join(
                        f"{k}: {100 * m['within_10']:.1f}% / {m['mape']:.1f}%"
                        for k, m in row.items()
                    ),
                    flush=True,
                )
        report["devices"][device] = res
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
