"""Experiment 6: does ``hwnas demo`` keep its latency budget, measured, seed after seed?

Runs the demo (``nas.cli._demo_flow.run_demo``: profile if needed, measure the base,
search 24 trials under a third of the base model's measured latency with every trained
candidate measured, export the most accurate trial that meets the budget side by side with
the base) once per seed, and records for each: the budget, the base and exported latency
measured side by side, whether the export meets the budget, the exported trial's predicted
and in-search measured latency, the top-1 change, the time spent measuring against the
search's wall time and the latency predictor's median error by quarter of the search.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/demo_budget.py --seeds 0,1,2,3,4 \
        --home /tmp/hwnas-home-demo

Writes experiments/results/demo_budget.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common as common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist-resnet")
    parser.add_argument("--device", default="local-cpu")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--home", default=None, help=f"HWNAS_HOME (default {common.DEFAULT_HOME})")
    parser.add_argument("--models-from", default="/tmp/hwnas-home-tasks/models")
    parser.add_argument("--out", default=str(common.RESULTS / "demo_budget.json"))
    args = parser.parse_args()

    home = common.setup_home(args.home, seed_models_from=args.models_from)
    common.one_thread()
    load = common.LoadSampler()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "experiment": "demo_budget",
        "command": "python " + " ".join(__import__("sys").argv),
        "machine": common.machine(),
        "home": str(home),
        "settings": {"task": args.task, "device": args.device, "trials": args.trials},
        "seeds": {},
    }
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"== seed {seed}")
        results["seeds"][str(seed)] = run_seed(args, home, seed)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    results["load"] = load.stop()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for seed, r in results["seeds"].items():
        print(seed, json.dumps(r))


def run_seed(args: Any, home: Path, seed: int) -> dict[str, Any]:
    from nas.cli._demo_flow import run_demo
    from nas.searching._run import open_run

    run_dir = home / "demo-runs" / f"{args.task}-s{seed}"
    result = run_demo(
        task=args.task, device=args.device, trials=args.trials, seed=seed, run_dir=run_dir,
        echo=print,
    )  # fmt: skip
    run = open_run(run_dir)
    session = run.user_attrs.get("last_session") or {}
    tracking = run.user_attrs.get("predictor_tracking") or {}
    search_s = 60.0 * float(session.get("minutes") or 0.0)
    return {
        "budget_fraction": result.budget_fraction,
        "base_ms": result.base_latency_ms,
        "exported_ms": result.latency_ms,
        "ratio": None if result.latency_ms is None else result.latency_ms / result.base_latency_ms,
        "meets_budget": result.meets_budget,
        "exported": result.export_dir is not None,
        "tried_trials": list(result.tried),
        "predicted_ms": result.predicted_ms,
        "search_measured_ms": result.search_measured_ms,
        "base_top1": result.base_top1,
        "top1": result.top1,
        "demo_s": round(result.seconds, 1),
        "search_s": round(search_s, 1),
        "measure_s": session.get("measure_s"),
        "measure_share": (
            round(float(session.get("measure_s") or 0.0) / search_s, 4) if search_s else None
        ),
        "quarters_median_error_pct": tracking.get("quarters_median_error_pct"),
        "refits": len(tracking.get("refits", [])),
    }


if __name__ == "__main__":
    main()
