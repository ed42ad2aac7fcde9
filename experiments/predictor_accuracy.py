"""Held-out accuracy of the latency predictors, including architectures outside training.

Fit on <= N_TRAIN measured graphs of the generic sweep (single kernels and small random
CNNs, fp32 and int8) and evaluate on held-out graphs that are mostly *other families*:
ResNet-18, MobileNetV2 and a VGG-style net at 224/96/32 px, several widths, fp32, int8 and
half-int8 mixes (built with onnx.helper, no torch), plus held-out sweep graphs.

    python experiments/predictor_accuracy.py --devices local-cpu local-cpu-2t \
        --n-train 300 --n-test 120

Measurements go through ``measure_cached`` into each device's store, so a rerun only
measures what is missing. Writes ``experiments/results/predictor_accuracy.json`` and a PNG.
Run on a quiet machine: other processes inflate the larger graphs' latencies.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from latency_models import (
    PREDICTORS,
    MeasurementStore,
    get_device,
    graph_features,
    measure_cached,
    prediction_metrics,
    quantize_qdq,
    sweep_graphs,
)
from latency_models._sweep import _Builder

RESULTS = Path(__file__).parent / "results"


def _ch(c: float) -> int:
    return max(8, round(c / 8) * 8)


def resnet18(size: int, width: float, seed: int = 0):
    b = _Builder(np.random.default_rng(seed))
    c = _ch(64 * width)
    y = b.conv("input", 3, c, 7, stride=2)
    y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for stage, mult in enumerate((1, 2, 4, 8)):
        cout = _ch(64 * mult * width)
        for block in range(2):
            s = 2 if (stage > 0 and block == 0) else 1
            z = b.conv(y, c, cout, 3, stride=s)
            z = b.conv(z, cout, cout, 3, act=None)
            short = y if (s == 1 and c == cout) else b.conv(y, c, cout, 1, stride=s, act=None)
            y = b.node("Relu", [b.node("Add", [short, z])])
            c = cout
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    return b.model([1, 3, size, size], b.linear(y, c, 1000), f"resnet18_{size}_w{width}")


def mobilenetv2(size: int, width: float, seed: int = 0):
    b = _Builder(np.random.default_rng(seed))
    c = _ch(32 * width)
    y = b.conv("input", 3, c, 3, stride=2, act="Relu6")
    for t, ch, n, s in [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1),
    ]:  # fmt: skip
        cout = _ch(ch * width)
        for i in range(n):
            stride = s if i == 0 else 1
            mid = c * t
            z = b.conv(y, c, mid, 1, act="Relu6") if t != 1 else y
            z = b.conv(z, mid, mid, 3, stride=stride, groups=mid, act="Relu6")
            z = b.conv(z, mid, cout, 1, act=None)
            y = b.node("Add", [y, z]) if (stride == 1 and c == cout) else z
            c = cout
    y = b.conv(y, c, 1280, 1, act="Relu6")
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    return b.model([1, 3, size, size], b.linear(y, 1280, 1000), f"mobilenetv2_{size}_w{width}")


def vgg(size: int, width: float, seed: int = 0):
    b = _Builder(np.random.default_rng(seed))
    c, y = 3, "input"
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            if size >= 64:
                y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
            continue
        cout = _ch(int(v) * width)
        y = b.conv(y, c, cout, 3)
        c = cout
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    return b.model([1, 3, size, size], b.linear(y, c, 1000), f"vgg11_{size}_w{width}")


def _conv_nodes(g) -> list[str]:
    return [n.name for n in g.graph.node if n.op_type in ("Conv", "Gemm")]


def test_graphs(n: int, seed: int, sizes: list[int]):
    """Out-of-family graphs first (all combinations), then held-out sweep graphs."""
    rng = np.random.default_rng(seed)
    out = []
    for family in (resnet18, mobilenetv2, vgg):
        for size in sizes:
            for width in (0.5, 1.0) if size > 100 else (0.25, 0.5, 1.0):
                g = family(size, width)
                precision = ["fp32", "int8", "mixed"][int(rng.integers(3))]
                if precision == "int8":
                    g = quantize_qdq(g)
                elif precision == "mixed":
                    convs = _conv_nodes(g)
                    g = quantize_qdq(g, nodes_to_exclude=convs[: len(convs) // 2])
                out.append((f"{g.graph.name}_{precision}", "ood", g))
    for name, g in sweep_graphs(max(0, n - len(out)), seed=seed + 1000):
        out.append((f"sweep-{name}", "sweep", g))
    return out[: max(n, len(out))]


def measure_all(graphs, device: str, max_seconds: float):
    store = MeasurementStore(device)
    ys, feats = [], []
    for i, (_name, _, g) in enumerate(graphs):
        f = graph_features(g)
        m = measure_cached(g, device, store=store, features=f.to_dict(), max_seconds=max_seconds)
        ys.append(m.latency_ms)
        feats.append(f)
        if (i + 1) % 20 == 0:
            print(f"  {device}: measured {i + 1}/{len(graphs)}", flush=True)
    return feats, np.array(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["local-cpu", "local-cpu-2t"])
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=120)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 96, 32])
    ap.add_argument("--max-seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "predictor_accuracy.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    train = [(n, "sweep", g) for n, g in sweep_graphs(args.n_train, seed=args.seed)]
    test = test_graphs(args.n_test, args.seed, args.sizes)
    print(f"{len(train)} training graphs, {len(test)} held-out graphs")
    report: dict = {"n_train": len(train), "n_test": len(test), "devices": {}}
    plots = {}
    for device in args.devices:
        spec = get_device(device)
        t0 = time.time()
        ftr, ytr = measure_all(train, spec.name, args.max_seconds)
        fte, yte = measure_all(test, spec.name, args.max_seconds)
        res: dict = {"measure_s": time.time() - t0, "predictors": {}}
        ood = np.array([kind == "ood" for _, kind, _ in test])
        for name in PREDICTORS.names():
            t1 = time.time()
            p = PREDICTORS.get(name)().fit(ftr, ytr)
            fit_s = time.time() - t1
            t1 = time.perf_counter()
            pred = p.predict_features(fte)
            per_graph_us = 1e6 * (time.perf_counter() - t1) / len(fte)
            res["predictors"][name] = {
                "all": prediction_metrics(yte, pred),
                "out_of_family": prediction_metrics(yte[ood], pred[ood]) if ood.any() else None,
                "sweep_held_out": prediction_metrics(yte[~ood], pred[~ood])
                if (~ood).sum() > 1
                else None,
                "fit_s": fit_s,
                "predict_us_per_graph_from_features": per_graph_us,
            }
            if name in ("additive-gbt", "flops"):
                plots[(device, name)] = (yte, pred, ood)
            m = res["predictors"][name]["all"]
            print(
                f"{device:14s} {name:13s} within10 {100 * m['within_10']:5.1f}% "
                f"mape {m['mape']:5.1f}% kendall {m['kendall']:.3f}"
            )
        res["test_graphs"] = [
            {"name": n, "kind": k, "latency_ms": float(y)}
            for (n, k, _), y in zip(test, yte, strict=True)
        ]
        report["devices"][device] = res
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    _plot(plots, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(plots, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({d for d, _ in plots})
    fig, axes = plt.subplots(1, len(devices), figsize=(5 * len(devices), 4.5), squeeze=False)
    for ax, device in zip(axes[0], devices, strict=True):
        for name, marker in (("flops", "x"), ("additive-gbt", "o")):
            if (device, name) not in plots:
                continue
            y, p, ood = plots[(device, name)]
            ax.scatter(y[ood], p[ood], marker=marker, s=14, label=f"{name} (other families)")
            ax.scatter(y[~ood], p[~ood], marker=marker, s=14, alpha=0.5, label=f"{name} (sweep)")
        lo, hi = (
            min(y.min() for y, _, _ in plots.values()),
            max(y.max() for y, _, _ in plots.values()),
        )
        xs = np.array([lo, hi])
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="gray", alpha=0.2, label="±10%")
        ax.set(xscale="log", yscale="log", xlabel="measured (ms)", ylabel="predicted (ms)")
        ax.set_title(device)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
