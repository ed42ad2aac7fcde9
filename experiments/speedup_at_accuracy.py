"""The fastest exported model within 1 point of the base model (fixed-accuracy speedup).

From an hwnas run (by default the one ``search_vs_baselines.py`` wrote in the same home),
take the trials whose short-recovery accuracy is within ``--within + --slack`` points of the
base model, in order of predicted latency (fastest first); export the first ``--candidates``
with ``nas.export`` and a longer fine-tune; measure them and the base model round-robin; keep
the fastest whose exported ONNX top-1 is within ``--within`` points of the base model's ONNX
top-1. Reports the measured speedup and the size reduction (ONNX file bytes and weight bytes).

    python experiments/speedup_at_accuracy.py --task mnist-resnet \
        --home /tmp/hwnas-home-experiments --finetune-steps 300 --candidates 5

Writes experiments/results/speedup_at_accuracy.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common as common

TARGET_SPEEDUP = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist-resnet")
    parser.add_argument("--device", default="local-cpu")
    parser.add_argument(
        "--run",
        default=None,
        help="hwnas run folder (default: search_vs_baselines.py's hwnas run in --home)",
    )
    parser.add_argument("--trials", type=int, default=40, help="to find the default --run")
    parser.add_argument("--recovery-steps", type=int, default=50, help="to find the default --run")
    parser.add_argument("--seed", type=int, default=0, help="to find the default --run")
    parser.add_argument("--within", type=float, default=1.0, help="allowed drop, top-1 points")
    parser.add_argument(
        "--slack",
        type=float,
        default=2.0,
        help="extra points a candidate's short-recovery accuracy may lose (the longer "
        "fine-tune recovers some)",
    )
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--home", default=None, help=f"HWNAS_HOME (default {common.DEFAULT_HOME})")
    parser.add_argument("--models-from", default="/tmp/hwnas-home-tasks/models")
    parser.add_argument("--out", default=str(common.RESULTS / "speedup_at_accuracy.json"))
    args = parser.parse_args()

    home = common.setup_home(args.home, seed_models_from=args.models_from)
    common.one_thread()
    load = common.LoadSampler()
    started = time.perf_counter()
    run_dir = (
        Path(args.run)
        if args.run
        else (
            home
            / "experiments"
            / f"{args.task}-t{args.trials}-r{args.recovery_steps}-s{args.seed}"
            / "run-hwnas"
        )
    )
    if not (run_dir / "settings.json").is_file():
        raise SystemExit(
            f"{run_dir} is not a run folder: run experiments/search_vs_baselines.py with the "
            f"same --home/--trials/--recovery-steps/--seed first, or pass --run RUN_DIR"
        )
    out = run(run_dir, args, home)
    out.update(
        experiment="speedup_at_accuracy",
        command=_command(),
        machine=common.machine(),
        home=str(home),
        load=load.stop(),
        wall_s=round(time.perf_counter() - started, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    plot(out, Path(args.out).with_suffix(".png"))
    print("wrote", args.out, "and", Path(args.out).with_suffix(".png"))


def _command() -> str:
    import sys

    return "python " + " ".join(sys.argv)


def run(run_dir: Path, args: Any, home: Path) -> dict[str, Any]:
    import nas
    from latency_models import memory_footprint
    from nas.results._pareto import read_run
    from nas.searching._config import SearchConfig
    from nas.searching._search import build_context
    from nas.tasks._onnx_eval import evaluate_onnx

    results = read_run(run_dir)
    task = nas.load_task(str(results.setting("task")))
    ctx = build_context(
        SearchConfig(task=task.name, device=args.device), task=task, with_predictors=False
    )
    work = home / "experiments" / f"speedup-{task.name}-f{args.finetune_steps}"
    work.mkdir(parents=True, exist_ok=True)
    base_model = ctx.space.apply(task.model, ctx.space.identity())
    from nas.searching._trial import export_graph

    base_graph = export_graph(ctx, base_model, ctx.space.identity(), work / "base.onnx")
    X_val, y_val = task.val
    base_acc = float(evaluate_onnx(base_graph, X_val, y_val))
    floor = base_acc - args.within
    rows = [
        r
        for r in results.rows
        if r.accuracy is not None
        and not r.rejected_before_training
        and r.accuracy >= floor - args.slack
    ]
    rows.sort(key=lambda r: float(r.predicted.get("latency_ms", r.values.get("latency_ms", 0))))
    seen: set[str] = set()
    picked = []
    for r in rows:
        key = json.dumps(r.config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        picked.append(r)
        if len(picked) >= args.candidates:
            break
    print(
        f"base ONNX top1 {base_acc:.2f}%; {len(rows)} trials within {args.within + args.slack} "
        f"points at short recovery; exporting {len(picked)} fastest by prediction"
    )
    candidates: list[dict[str, Any]] = []
    graphs: dict[str, Any] = {"base": base_graph}
    for r in picked:
        start = time.perf_counter()
        try:
            res = nas.export(
                run_dir,
                r.number,
                out_dir=work / f"t{r.number}",
                finetune_steps=args.finetune_steps,
                force=True,
                measure_seconds=1.0,
            )
        except Exception as exc:  # a verification failure: the model does not qualify
            print(f"export of trial {r.number} failed: {exc}")
            candidates.append({"trial": r.number, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rep = res.report
        c = {
            "trial": r.number,
            "summary": rep["summary"],
            "search_accuracy": r.accuracy,
            "accuracy": float(rep["accuracy"]["onnx_top1"]),
            "predicted_ms": float(r.predicted.get("latency_ms", 0.0)),
            "latency_ms_single": float(rep["measured"]["latency_ms"]),
            "onnx_bytes": int(rep["files"]["model.onnx"]["bytes"]),
            "weight_bytes": int(rep["measured"]["weight_bytes"]),
            "export_s": round(time.perf_counter() - start, 1),
        }
        graphs[f"t{r.number}"] = res.out_dir / "model.onnx"
        candidates.append(c)
        print(
            f"trial {r.number} ({c['summary']}): ONNX top1 {c['accuracy']:.2f}% after "
            f"{args.finetune_steps} steps (search {r.accuracy:.2f}%), "
            f"{c['latency_ms_single']:.4f} ms"
        )
    final = common.measure_interleaved(graphs, args.device, rounds=args.rounds)
    base_ms = final["base"]["latency_ms"]
    base_fp = memory_footprint(base_graph)
    base_info = {
        "accuracy": base_acc,
        "latency_ms": base_ms,
        "onnx_bytes": base_graph.stat().st_size,
        "weight_bytes": int(base_fp.weight_bytes),
    }
    for c in candidates:
        if "error" in c:
            continue
        c["latency_ms"] = final[f"t{c['trial']}"]["latency_ms"]
        c["speedup"] = base_ms / c["latency_ms"]
        c["within"] = c["accuracy"] >= floor
        c["onnx_size_reduction"] = base_info["onnx_bytes"] / c["onnx_bytes"]
        c["weight_size_reduction"] = base_info["weight_bytes"] / c["weight_bytes"]
    ok = [c for c in candidates if c.get("within")]
    best = max(ok, key=lambda c: c["speedup"]) if ok else None
    out: dict[str, Any] = {
        "task": task.name,
        "device": args.device,
        "run": str(run_dir),
        "settings": {
            "within_points": args.within,
            "slack_points": args.slack,
            "candidates": args.candidates,
            "finetune_steps": args.finetune_steps,
            "rounds": args.rounds,
        },
        "base": base_info,
        "final_latency_ms": {k: v for k, v in final.items()},
        "candidates": candidates,
        "best": best,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": bool(best and best["speedup"] >= TARGET_SPEEDUP),
        "smallest_config": _smallest(ctx, work, final_rounds=args.rounds, device=args.device),
    }
    if best:
        print(
            f"fastest within {args.within} point: trial {best['trial']} ({best['summary']}) "
            f"{best['speedup']:.2f}x faster, top1 {best['accuracy']:.2f}% vs {base_acc:.2f}%, "
            f"ONNX {best['onnx_size_reduction']:.2f}x smaller, weights "
            f"{best['weight_size_reduction']:.2f}x smaller"
        )
    return out


def _smallest(ctx: Any, work: Path, *, final_rounds: int, device: str) -> dict[str, Any]:
    """The space's cheapest config (untrained): the speedup ceiling of the space."""
    from nas.searching._trial import export_graph

    config = ctx.space.smallest()
    model = ctx.space.apply(ctx.task.model, config)
    path = export_graph(ctx, model, config, work / "smallest.onnx")
    m = common.measure_interleaved(
        {"base": work / "base.onnx", "smallest": path}, device, rounds=final_rounds
    )
    return {
        "summary": ctx.space.summarize(config),
        "latency_ms": m["smallest"]["latency_ms"],
        "speedup_ceiling": m["base"]["latency_ms"] / m["smallest"]["latency_ms"],
    }


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    cs = [c for c in out["candidates"] if "speedup" in c]
    ax.scatter(
        [c["speedup"] for c in cs],
        [c["accuracy"] for c in cs],
        c=["tab:blue" if c["within"] else "tab:gray" for c in cs],
        s=60,
        label="exported candidates (measured)",
    )
    for c in cs:
        ax.annotate(
            f"t{c['trial']}",
            (c["speedup"], c["accuracy"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    base = out["base"]
    ax.scatter([1.0], [base["accuracy"]], marker="s", color="black", label="base")
    ax.axhline(
        base["accuracy"] - out["settings"]["within_points"],
        ls="--",
        color="tab:green",
        label="base - 1 point",
    )
    ax.axvline(out["target_speedup"], ls=":", color="tab:red", label="target 4x")
    ceiling = out["smallest_config"]["speedup_ceiling"]
    ax.axvline(ceiling, ls="-.", color="tab:orange", label=f"cheapest config {ceiling:.1f}x")
    if out["best"]:
        b = out["best"]
        ax.scatter(
            [b["speedup"]],
            [b["accuracy"]],
            marker="*",
            s=250,
            color="tab:blue",
            label=f"fastest within 1 point: {b['speedup']:.2f}x",
            zorder=5,
        )
    ax.set_xlabel("measured speedup over the base (local-cpu, 1 thread)")
    ax.set_ylabel("ONNX top-1 % (validation)")
    ax.set_title(f"{out['task']}: speedup at fixed accuracy")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
