"""Measure the search on a bundled task: trials/min with 1 and 2 workers, trials rejected
before training, and the fidelity (Kendall tau) of the short recovery.

    HWNAS_HOME=/tmp/hwnas-home python experiments/search_throughput.py --task mnist-resnet \
        --trials 24 --profile-minutes 3

Writes experiments/results/search_throughput.json. The device must be otherwise idle for the
trials/min to mean anything; the load average is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import nas
from latency_models import PredictorNotFoundError, device_predictor
from nas._profile import profile_device


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
    parser.add_argument("--out", default="experiments/results/search_throughput.json")
    args = parser.parse_args()

    task = nas.load_task(args.task)
    try:
        device_predictor(args.device)
    except PredictorNotFoundError:
        profile_device(
            args.device, task=args.task, budget_minutes=args.profile_minutes, progress=print
        )

    # the base model's predicted latency sets the budget
    from nas._config import SearchConfig
    from nas._search import base_metrics, build_context

    probe = SearchConfig(task=args.task, device=args.device)
    base = base_metrics(build_context(probe, task=task))
    budget = {
        "latency_ms": round(args.latency_fraction * base["latency_ms"], 4),
        "accuracy_drop": args.accuracy_drop,
    }
    results: dict = {
        "task": args.task,
        "device": args.device,
        "base": base,
        "budget": budget,
        "recovery_steps": args.recovery_steps,
        "runs": {},
    }
    root = Path(tempfile.mkdtemp(prefix="hwnas-throughput-"))
    for workers in (int(w) for w in args.workers.split(",")):
        load_before = os.getloadavg()[0]
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
            "front": [
                {"number": t.number, "values": t.values, "summary": t.user_attrs.get("summary")}
                for t in front
            ],
            "counts": run.counts(),
        }
        print(json.dumps(results["runs"][str(workers)], indent=1)[:2000])
    if args.fidelity_trials:
        first = root / f"w{args.workers.split(',')[0]}"
        results["fidelity"] = nas.fidelity(
            first, task=task, n_trials=args.fidelity_trials, steps=args.fidelity_steps
        )
        print("kendall tau", results["fidelity"].get("kendall_tau"))
        from nas._verify import verify_front

        ctx = build_context(nas.open_run(first).settings, task=task)
        results["verification"] = verify_front(nas.open_run(first), ctx)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
