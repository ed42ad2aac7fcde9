"""Experiment 2: hwnas search against uniform baselines and random search.

For each task: one hwnas search (TPE, objectives accuracy, latency_ms, memory_mb) under the
loosest latency budget, relative to the base model measured on the device (``0.5x``; every
trained candidate is measured, so the search decides on measured latency), and one
random-sampler search with the same trial count, budget and recovery; then uniform baselines
(``space.uniform(width=w)``, uniform int8, uniform width + int8), each recovered with the
same distillation steps, exported to ONNX, evaluated in onnxruntime and measured on the
device. At each budget (a fraction of the base model's measured latency) the most accurate
candidate of each method whose *measured* latency meets it is picked; search trials whose
latency measured during the search meets it are exported in order of accuracy with
``nas.export`` (same fine-tune steps as the search's recovery) so their accuracy is the
exported ONNX model's. At the end every graph that enters the table is measured again,
round-robin, and the table uses those medians.

    python experiments/search_vs_baselines.py --task mnist-resnet --trials 40 \
        --budgets 0.5,0.33,0.25 --home /tmp/hwnas-home-experiments

Writes experiments/results/search_vs_baselines.json and .png (one row of panels per task).
One search covers every budget: its budget is the loosest one, so every trial that meets a
tighter budget is also in the run, and the sampler's effort goes to the region of interest.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import _common as common

SEARCH_OBJECTIVES = ("accuracy", "latency_ms", "memory_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist-resnet", help="comma-separated task names")
    parser.add_argument("--device", default="local-cpu")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--recovery-steps", type=int, default=50)
    parser.add_argument("--budgets", default="0.5,0.33,0.25", help="fractions of base latency")
    parser.add_argument("--widths", default="0.875,0.75,0.625,0.5,0.375,0.25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="hwnas,random", help="searches to run")
    parser.add_argument("--max-exports", type=int, default=3, help="per budget and method")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved final measurement")
    parser.add_argument("--home", default=None, help=f"HWNAS_HOME (default {common.DEFAULT_HOME})")
    parser.add_argument("--models-from", default="/tmp/hwnas-home-tasks/models")
    parser.add_argument("--profile-minutes", type=float, default=3.0)
    parser.add_argument("--no-warm-start", action="store_true")
    parser.add_argument("--out", default=str(common.RESULTS / "search_vs_baselines.json"))
    args = parser.parse_args()

    home = common.setup_home(args.home, seed_models_from=args.models_from)
    common.one_thread()
    load = common.LoadSampler()
    started = time.perf_counter()
    fractions = sorted((float(f) for f in args.budgets.split(",")), reverse=True)
    results: dict[str, Any] = {
        "experiment": "search_vs_baselines",
        "command": _command(),
        "machine": common.machine(),
        "home": str(home),
        "settings": {
            "device": args.device,
            "trials": args.trials,
            "recovery_steps": args.recovery_steps,
            "budget_fractions": fractions,
            "widths": [float(w) for w in args.widths.split(",")],
            "seed": args.seed,
            "objectives": list(SEARCH_OBJECTIVES),
            "warm_start": not args.no_warm_start,
        },
        "tasks": {},
    }
    if Path(args.out).is_file():  # keep other tasks' results (one task per invocation works)
        previous = json.loads(Path(args.out).read_text())
        results["tasks"] = previous.get("tasks", {})
        results["earlier_commands"] = [
            *previous.get("earlier_commands", []),
            {
                "command": previous.get("command"),
                "date": previous.get("machine", {}).get("date"),
                "load": previous.get("load"),
                "wall_s": previous.get("wall_s"),
            },
        ]
    for task_name in args.task.split(","):
        print(f"== {task_name}")
        results["profile"] = common.ensure_profile(args.device, task_name, args.profile_minutes)
        key = task_name if args.seed == 0 else f"{task_name} seed {args.seed}"
        results["tasks"][key] = run_task(task_name, args, home, fractions)
        _write(results, args.out)  # partial results survive a later failure
    results["load"] = load.stop()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    _write(results, args.out)
    plot(results, Path(args.out).with_suffix(".png"))
    print("wrote", args.out, "and", Path(args.out).with_suffix(".png"))


def _command() -> str:
    import sys

    return "python " + " ".join(sys.argv)


def _write(results: dict[str, Any], out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2, default=_json_default) + "\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(type(v).__name__)


# -- one task ------------------------------------------------------------------------------


def run_task(task_name: str, args: Any, home: Path, fractions: list[float]) -> dict[str, Any]:
    import nas
    from nas.searching._base import base_metrics
    from nas.searching._base import costs_of as _costs_of
    from nas.searching._config import SearchConfig
    from nas.searching._search import build_context

    timings: dict[str, float] = {}
    task = nas.load_task(task_name)
    probe = SearchConfig(task=task_name, device=args.device)
    ctx = build_context(probe, task=task)
    base = base_metrics(ctx)
    work = home / "experiments" / f"{task_name}-t{args.trials}-r{args.recovery_steps}-s{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    search_budget = {"latency_ms": f"{max(fractions):g}x"}
    print(
        f"base: {base['accuracy']:.2f}% predicted {base['latency_ms']:.4f} ms, measured "
        f"{base['measured']['latency_ms']:.4f} ms; smallest config measured "
        f"{base['smallest_measured']['latency_ms']:.4f} ms; search budget {search_budget}"
    )
    out: dict[str, Any] = {
        "base": base,
        "smallest_config_measured_ms": base["smallest_measured"]["latency_ms"],
        "search_budget": search_budget,
        "space": ctx.space.describe(),
    }
    runs = {}
    methods = args.methods.split(",")
    for method, sampler, warm in (
        ("hwnas", "tpe", not args.no_warm_start),
        ("random", "random", False),
    ):
        if method not in methods:
            continue
        run_dir = work / f"run-{method}"
        with common.timed(timings, f"search_{method}"):
            run = nas.search(
                task,
                device=args.device,
                objectives=SEARCH_OBJECTIVES,
                budget=search_budget,
                n_trials=args.trials,
                sampler=sampler,
                run_dir=run_dir,
                seed=args.seed,
                recovery_steps=args.recovery_steps,
                warm_start=warm,
                verify=False,
            )
        if method == "hwnas":
            from nas.searching._verify import verify_front

            with common.timed(timings, "verify_hwnas_front"):
                out["hwnas_front_verification"] = verify_front(run, ctx)
        runs[method] = run_dir
        out[f"{method}_session"] = run.user_attrs.get("last_session")
        out[f"{method}_measurement"] = _measurement_share(run)
    out["hypervolume"] = {m: _hv_history(d) for m, d in runs.items()}
    out["trials"] = {m: _trial_rows(d) for m, d in runs.items()}

    with common.timed(timings, "baselines"):
        graphs, baselines = uniform_baselines(ctx, args, work)
    _, base_graph = _costs_of(ctx, ctx.space.identity(), work / "graphs", "base")
    graphs["base"] = base_graph

    # search picks: per budget and method, export candidates whose latency measured in the
    # search meets the budget, in order of accuracy, until one meets it measured again
    exports: dict[str, dict[str, Any]] = {}
    with common.timed(timings, "exports"):
        for method, run_dir in runs.items():
            base_ms_first = _search_base_ms(run_dir)
            for frac in fractions:
                rows = [
                    r
                    for r in out["trials"][method]
                    if r["accuracy"] is not None
                    and r["measured_ms"] is not None
                    and r["measured_ms"] <= frac * base_ms_first
                    and not r["rejected"]
                ]
                rows.sort(key=lambda r: (-r["accuracy"], r["measured_ms"]))
                for r in rows[: args.max_exports]:
                    key = f"{method}-t{r['number']}"
                    if key not in exports:
                        exports[key] = export_trial(run_dir, r, args, work, method)
                        if "onnx" in exports[key]:
                            graphs[key] = exports[key]["onnx"]
                    e = exports[key]
                    if e.get("latency_ms", math.inf) <= frac * base_ms_first:
                        break
    out["exports"] = exports

    # the table's numbers: every graph again, round-robin
    print(f"measuring {len(graphs)} graphs interleaved, {args.rounds} rounds")
    with common.timed(timings, "final_measurement"):
        final = common.measure_interleaved(graphs, args.device, rounds=args.rounds)
    out["final_latency_ms"] = final
    base_ms = final["base"]["latency_ms"]
    out["base_latency_ms_interleaved"] = base_ms
    for b in baselines:
        b["latency_ms"] = final[b["name"]]["latency_ms"]
        b["speedup"] = base_ms / b["latency_ms"]
    for key, e in exports.items():
        if key in final:
            e["latency_ms_single"] = e.get("latency_ms")
            e["latency_ms"] = final[key]["latency_ms"]
            e["speedup"] = base_ms / e["latency_ms"]
    out["baselines"] = baselines
    out["budgets"] = [
        compare_at_budget(frac, base_ms, base["accuracy"], baselines, exports)
        for frac in fractions
    ]
    out["timings_s"] = timings
    for row in out["budgets"]:
        print(json.dumps(row, default=_json_default))
    return out


def _search_base_ms(run_dir: Path) -> float:
    """The base model's median latency measured at the start of the search."""
    settings = json.loads((run_dir / "settings.json").read_text())
    return float(settings["base_measured"]["base"]["latency_ms"])


def _measurement_share(run: Any) -> dict[str, Any]:
    """Seconds measuring against the search's wall time, and the predictor's error by quarter."""
    session = run.user_attrs.get("last_session") or {}
    tracking = run.user_attrs.get("predictor_tracking") or {}
    seconds = 60.0 * float(session.get("minutes") or 0.0)
    measure_s = float(session.get("measure_s") or 0.0)
    return {
        "measure_s": measure_s,
        "search_s": round(seconds, 1),
        "share": round(measure_s / seconds, 4) if seconds else None,
        "quarters_median_error_pct": tracking.get("quarters_median_error_pct"),
        "n_measured": len(tracking.get("trials", [])),
        "refits": len(tracking.get("refits", [])),
    }


def _hv_history(run_dir: Path) -> list[list[float]]:
    from nas.results._hypervolume import hypervolume_history
    from nas.results._pareto import read_run

    return [[n, round(hv, 5)] for n, hv in hypervolume_history(read_run(run_dir))]


def _trial_rows(run_dir: Path) -> list[dict[str, Any]]:
    from nas.results._pareto import read_run

    rows = []
    for r in read_run(run_dir).rows:
        rows.append(
            {
                "number": r.number,
                "accuracy": r.accuracy,
                "predicted_ms": float(r.predicted.get("latency_ms", r.values.get("latency_ms"))),
                "measured_ms": r.measured.get("latency_ms"),
                "memory_mb": float(r.predicted.get("memory_mb", math.nan)),
                "rejected": r.rejected_before_training,
                "budget_met": r.budget_met,
                "pareto": r.pareto,
                "summary": r.summary,
            }
        )
    return rows


def uniform_baselines(
    ctx: Any, args: Any, work: Path
) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Recover, export, evaluate (ONNX) and measure each uniform config once."""
    from latency_models import measure, memory_footprint
    from nas.searching._trial import export_graph, is_quantized
    from nas.tasks._onnx_eval import evaluate_onnx
    from nas.tasks._recovery import recover

    widths = [float(w) for w in args.widths.split(",")]
    candidates: list[tuple[str, str, Any]] = [("int8", "int8", ctx.space.uniform(bits=8))]
    for w in widths:
        candidates.append((f"width{w:g}", "width", ctx.space.uniform(width=w)))
        candidates.append((f"width{w:g}+int8", "width+int8", ctx.space.uniform(width=w, bits=8)))
    seen: set[Any] = set()
    graphs: dict[str, Path] = {}
    baselines: list[dict[str, Any]] = []
    folder = work / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    X_val, y_val = ctx.task.val
    for name, family, config in candidates:
        if config in seen:
            continue
        seen.add(config)
        start = time.perf_counter()
        model = ctx.space.apply(ctx.task.model, config)
        recover(
            model,
            ctx.task.model,
            ctx.task,
            steps=args.recovery_steps,
            seed=args.seed,
            batch_size=ctx.recovery_batch_size,
            lr=ctx.recovery_lr,
        )
        path = export_graph(ctx, model, config, folder / f"{name}.onnx")
        top1 = float(evaluate_onnx(path, X_val, y_val))
        m = measure(str(path), ctx.device, max_seconds=1.0)
        fp = memory_footprint(path)
        graphs[name] = path
        baselines.append(
            {
                "name": name,
                "family": family,
                "summary": ctx.space.summarize(config),
                "int8": is_quantized(config),
                "accuracy": top1,
                "latency_ms_single": float(m.latency_ms),
                "onnx_bytes": path.stat().st_size,
                "weight_bytes": int(fp.weight_bytes),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(
            f"baseline {name}: top1 {top1:.2f}% latency {m.latency_ms:.4f} ms "
            f"({baselines[-1]['seconds']} s)"
        )
    return graphs, baselines


def export_trial(
    run_dir: Path, row: dict[str, Any], args: Any, work: Path, method: str
) -> dict[str, Any]:
    """``nas.export`` one trial (fine-tune = the search's recovery steps); its report's numbers."""
    import nas

    out_dir = work / "exports" / f"{method}-t{row['number']}"
    start = time.perf_counter()
    relaxed = None
    try:
        result = nas.export(
            run_dir,
            row["number"],
            out_dir=out_dir,
            finetune_steps=args.recovery_steps,
            force=True,
            measure_seconds=1.0,
        )
    except Exception as exc:
        # int8 graphs must agree with the fp32 torch model on 98% of the validation set; a
        # model recovered with few steps can fall short. The table compares ONNX accuracy
        # (what runs), as for the baselines, so export anyway and record the failed check.
        relaxed = f"{type(exc).__name__}: {exc}"
        print(f"export of {method} trial {row['number']}: {relaxed}; exporting unchecked")
        try:
            result = nas.export(
                run_dir,
                row["number"],
                out_dir=out_dir,
                finetune_steps=args.recovery_steps,
                force=True,
                measure_seconds=1.0,
                int8_agreement=0.01,
            )
        except Exception as exc2:
            return {
                "trial": row["number"],
                "method": method,
                "error": f"{type(exc2).__name__}: {exc2}",
            }
    rep = result.report
    e = {
        "trial": row["number"],
        "method": method,
        "summary": rep["summary"],
        "search_accuracy": row["accuracy"],
        "accuracy": float(rep["accuracy"]["onnx_top1"]),
        "predicted_ms": row["predicted_ms"],
        "latency_ms": float(rep["measured"]["latency_ms"]),
        "onnx_bytes": int(rep["files"]["model.onnx"]["bytes"]),
        "weight_bytes": int(rep["measured"]["weight_bytes"]),
        "onnx": str(result.out_dir / "model.onnx"),
        "seconds": round(time.perf_counter() - start, 1),
        "int8_agreement": rep["verification"]["agreement"],
        "verification_failed": relaxed,
    }
    print(
        f"export {method} trial {row['number']} ({e['summary']}): ONNX top1 "
        f"{e['accuracy']:.2f}% (search {row['accuracy']:.2f}%), {e['latency_ms']:.4f} ms "
        f"measured ({row['predicted_ms']:.4f} predicted)"
    )
    return e


def compare_at_budget(
    frac: float,
    base_ms: float,
    base_acc: float,
    baselines: list[dict[str, Any]],
    exports: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Each method's most accurate candidate whose measured latency meets the budget."""
    limit = frac * base_ms

    def best(items: list[dict[str, Any]]) -> dict[str, Any] | None:
        ok = [i for i in items if i.get("latency_ms", math.inf) <= limit and "error" not in i]
        if not ok:
            return None
        pick = max(ok, key=lambda i: (i["accuracy"], -i["latency_ms"]))
        keys = ("name", "trial", "summary", "accuracy", "latency_ms", "speedup")
        return {k: pick[k] for k in keys if k in pick}

    row: dict[str, Any] = {"fraction": frac, "limit_ms": limit}
    for family in ("width", "int8", "width+int8"):
        row[f"uniform {family}"] = best([b for b in baselines if b["family"] == family])
    for method in ("hwnas", "random"):
        row[method] = best([e for e in exports.values() if e.get("method") == method])
    hw = row["hwnas"]
    if hw is not None:
        # at least as accurate as every uniform baseline at the same or higher latency
        # within the budget, and (beats_best_uniform_under_budget) as every one that meets it
        rivals = [b for b in baselines if hw["latency_ms"] <= b["latency_ms"] <= limit]
        row["uniform_at_same_or_higher_latency"] = [
            {"name": b["name"], "accuracy": b["accuracy"], "latency_ms": b["latency_ms"]}
            for b in rivals
        ]
        row["target_met"] = all(hw["accuracy"] >= b["accuracy"] for b in rivals)
        uniform_best = [row[f"uniform {f}"] for f in ("width", "int8", "width+int8")]
        row["beats_best_uniform_under_budget"] = all(
            u is None or hw["accuracy"] >= u["accuracy"] for u in uniform_best
        )
        row["hwnas_drop_points"] = base_acc - hw["accuracy"]
    else:
        row["target_met"] = False
        row["note"] = "no hwnas trial met this budget measured"
    return row


# -- the figure ----------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 4.5 * len(tasks)), squeeze=False)
    for (ax, ax_hv), (name, t) in zip(axes, tasks.items(), strict=True):
        base_ms = t["base_latency_ms_interleaved"]
        for method, color in (("hwnas", "tab:blue"), ("random", "tab:gray")):
            pts = [
                (r["measured_ms"] / t["base"]["measured"]["latency_ms"], r["accuracy"])
                for r in t["trials"].get(method, [])
                if r["accuracy"] is not None and r.get("measured_ms") is not None
            ]
            if pts:
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    s=10,
                    alpha=0.3,
                    color=color,
                    label=f"{method} trials (measured in the search, short recovery)",
                )
        markers = {"width": "o-", "int8": "s", "width+int8": "^-"}
        for family, style in markers.items():
            pts = sorted(
                (b["latency_ms"] / base_ms, b["accuracy"])
                for b in t["baselines"]
                if b["family"] == family
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"uniform {family}")
        for method, color, marker in (("hwnas", "tab:blue", "*"), ("random", "black", "x")):
            pts = [
                (e["latency_ms"] / base_ms, e["accuracy"])
                for e in t["exports"].values()
                if e.get("method") == method and "latency_ms" in e
            ]
            if pts:
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    s=120 if marker == "*" else 50,
                    marker=marker,
                    color=color,
                    label=f"{method} exported (measured)",
                    zorder=5,
                )
        for row in t["budgets"]:
            ax.axvline(row["fraction"], color="tab:red", ls=":", lw=1)
        ax.axhline(
            t["base"]["accuracy"] - 1, color="tab:green", ls="--", lw=1, label="base - 1 point"
        )
        ax.set_xlabel("latency / base latency (measured, local-cpu 1 thread)")
        ax.set_ylabel("top-1 % (validation)")
        lo = min(
            [b["accuracy"] for b in t["baselines"]]
            + [e["accuracy"] for e in t["exports"].values() if "accuracy" in e]
        )
        ax.set_ylim(max(lo - 1, t["base"]["accuracy"] - 12), t["base"]["accuracy"] + 0.7)
        ax.set_title(f"{name}: accuracy vs measured latency (budgets dotted)")
        ax.legend(fontsize=7, loc="lower right")
        for method, color in (("hwnas", "tab:blue"), ("random", "tab:gray")):
            hv = t["hypervolume"].get(method, [])
            ax_hv.plot([h[0] + 1 for h in hv], [h[1] for h in hv], color=color, label=method)
        ax_hv.set_xlabel("trials")
        ax_hv.set_ylabel("hypervolume (normalised to the base model)")
        ax_hv.set_title(f"{name}: hypervolume of the feasible front over trials")
        ax_hv.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
