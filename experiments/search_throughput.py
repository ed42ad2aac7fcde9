"""Measure the search on a bundled task (scaling): trials/min with 1 and 2 workers, the
cost of a search broken down by phase (apply, export, predict, train, eval, from each
trial's ``timings_s``; the front's verification measurements, timed here), trials rejected
before training, and the fidelity (Kendall tau) of the short recovery.

    python experiments/search_throughput.py --task mnist-resnet --trials 24 \
        --home /tmp/hwnas-home-experiments

Writes experiments/results/search_throughput.json and .png. The machine must be otherwise
idle for the trials/min to mean anything; the load average is sampled during each run and
recorded next to the numbers. Do not pin this script to one core: two workers need two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="mnist-resnet")
    parser.add_argument("--device", default="local-cpu")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--recovery-steps", type=int, default=50)
    parser.add_argument(
        "--latency-fraction",
        type=float,
        default=0.6,
        help="latency budget as a fraction of the base model's predicted latency",
    )
    parser.add_argument("--accuracy-drop", type=float, default=2.0)
    parser.add_argument("--profile-minutes", type=float, default=3.0)
    parser.add_argument("--fidelity-trials", type=int, default=8)
    parser.add_argument("--fidelity-steps", type=int, default=300)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--home", default=None, help=f"HWNAS_HOME (default {common.DEFAULT_HOME})")
    parser.add_argument("--models-from", default="/tmp/hwnas-home-tasks/models")
    parser.add_argument("--out", default=str(common.RESULTS / "search_throughput.json"))
    args = parser.parse_args()

    home = common.setup_home(args.home, seed_models_from=args.models_from)
    import nas

    task = nas.load_task(args.task)
    profile = common.ensure_profile(args.device, args.task, args.profile_minutes)

    # the base model's predicted latency sets the budget
    from nas.searching._config import SearchConfig
    from nas.searching._search import base_metrics, build_context

    probe = SearchConfig(task=args.task, device=args.device)
    base = base_metrics(build_context(probe, task=task))
    budget = {
        "latency_ms": round(args.latency_fraction * base["latency_ms"], 4),
        "accuracy_drop": args.accuracy_drop,
    }
    results: dict = {
        "experiment": "search_throughput",
        "command": "python " + " ".join(sys.argv),
        "machine": common.machine(),
        "home": str(home),
        "profile": profile,
        "task": args.task,
        "device": args.device,
        "base": base,
        "budget": budget,
        "recovery_steps": args.recovery_steps,
        "runs": {},
    }
    root = Path(tempfile.mkdtemp(prefix="throughput-", dir=home))
    for workers in (int(w) for w in args.workers.split(",")):
        load_before = os.getloadavg()[0]
        load = common.LoadSampler(every_s=5.0)
        start = time.perf_counter()
        run = nas.search(
            task,
            device=args.device,
            objectives=("accuracy", "latency_ms"),
            budget=budget,
            n_trials=args.trials,
            workers=workers,
            run_dir=root / f"w{workers}",
            seed=0,
            recovery_steps=args.recovery_steps,
            warm_start=False,
            verify=False,
        )
        wall = time.perf_counter() - start
        session = run.user_attrs["last_session"]
        front = run.pareto_trials()
        results["runs"][str(workers)] = {
            **session,
            "wall_s_including_setup": round(wall, 1),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "load_during": load.stop(),
            "phases_s": phases(run),
            "front": [
                {"number": t.number, "values": t.values, "summary": t.user_attrs.get("summary")}
                for t in front
            ],
            "counts": run.counts(),
        }
        failed = run.counts().get("FAIL", 0)
        if failed:
            # a failed trial is fast: counting it would inflate trials/min
            errors = sorted(
                {str(t.user_attrs.get("error", ""))[:200] for t in run.failed_trials()}
            )
            results["runs"][str(workers)]["failed_errors"] = errors
            print(f"WARNING: {failed} trial(s) failed with {workers} worker(s): {errors}")
        results["runs"][str(workers)]["completed_per_min"] = round(
            (session["trials"] - failed) / session["minutes"], 3
        )
        print(json.dumps(results["runs"][str(workers)], indent=1)[:2000])
    if args.fidelity_trials:
        first = root / f"w{args.workers.split(',')[0]}"
        start = time.perf_counter()
        results["fidelity"] = nas.fidelity(
            first, task=task, n_trials=args.fidelity_trials, steps=args.fidelity_steps
        )
        results["fidelity"]["seconds"] = round(time.perf_counter() - start, 2)
        print("kendall tau", results["fidelity"].get("kendall_tau"))
        from nas.searching._verify import verify_front

        ctx = build_context(nas.open_run(first).settings, task=task)
        start = time.perf_counter()
        results["verification"] = verify_front(nas.open_run(first), ctx)
        results["verification"]["seconds"] = round(time.perf_counter() - start, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    plot(results, Path(args.out).with_suffix(".png"))
    shutil.rmtree(root, ignore_errors=True)
    print("wrote", args.out, "and", Path(args.out).with_suffix(".png"))


PHASES = ("apply", "export", "predict", "train", "eval")


def phases(run: Any) -> dict[str, Any]:
    """Seconds per phase, summed over the run's trials and per trial (from ``timings_s``)."""
    totals = dict.fromkeys((*PHASES, "total"), 0.0)
    n = 0
    for trial in run.trials():
        t = trial.user_attrs.get("timings_s") or {}
        if not t:
            continue
        n += 1
        for key in totals:
            totals[key] += float(t.get(key, 0.0))
    other = totals["total"] - sum(totals[p] for p in PHASES)
    return {
        "trials": n,
        "sum_s": {k: round(v, 2) for k, v in totals.items()} | {"other": round(other, 2)},
        "per_trial_s": {k: round(v / max(n, 1), 3) for k, v in totals.items()}
        | {"other": round(other / max(n, 1), 3)},
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = results["runs"]
    names = list(runs)
    rates = [runs[w].get("completed_per_min", runs[w]["trials_per_min"]) or 0.0 for w in names]
    ax_rate.bar([f"{w} worker(s)" for w in names], rates, color="tab:blue")
    for i, (w, r) in enumerate(zip(names, rates, strict=True)):
        load = runs[w].get("load_during", {}).get("load1_mean")
        ax_rate.annotate(f"{r:.1f}/min\nload {load}", (i, r), ha="center", va="bottom", fontsize=8)
    ax_rate.set_ylim(0, 1.25 * max([*rates, 1.0]))
    ax_rate.set_ylabel("completed trials per minute")
    ax_rate.set_title(f"{results['task']}: search throughput")
    first = runs[names[0]]["phases_s"]["sum_s"]
    bars = [(p, first.get(p, 0.0)) for p in (*PHASES, "other")]
    ver = results.get("verification", {}).get("seconds")
    if ver is not None:
        bars.append(("verify (measure)", ver))
    fid = results.get("fidelity", {}).get("seconds")
    if fid is not None:
        bars.append(("fidelity", fid))
    ax_cost.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:orange")
    ax_cost.set_xlabel("seconds in the 1-worker search (summed over trials)")
    ax_cost.set_title(f"cost of a {runs[names[0]]['phases_s']['trials']}-trial search by phase")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
