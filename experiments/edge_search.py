"""Searches on the edge-size task (mnist64-resnet18): multi-fidelity against full recovery,
and one against two workers, each launched as a user would, with `hwnas search`.

    python experiments/edge_search.py --runs /tmp/edge-runs

Each named search runs once into ``--runs/NAME`` (an existing finished run folder is read,
not run again), then the summary is read back from the run folders: trials finished and
stopped early, the search's wall time (first trial start to last trial end), trials per
hour, successive halving's rungs and rank agreement, and the most accurate trial whose
measured latency meets the budget. The 1-minute load average is sampled during each run.
Do not pin this script: two workers need both cores; nothing else should run beside it.

The multi-fidelity run's chosen trial is then exported (`hwnas export`, fine-tuned and
verified) and its measured latency and accuracy recorded. Writes
experiments/results/edge_search.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as common

TASK = "mnist64-resnet18"
BUDGET = "latency_ms=0.5x"
RUNS: dict[str, list[str]] = {
    # the search: 40 trials, multi-fidelity, and the same without it, side by side
    "halving": ["--trials", "40", "--recovery-steps", "90", "--halving", "3", "--timeout", "20m"],
    "full-recovery": ["--trials", "40", "--recovery-steps", "90", "--timeout", "12m"],
    # worker scaling: the same short search on one and on two workers
    "workers-1": ["--trials", "12", "--recovery-steps", "30", "--workers", "1"],
    "workers-2": ["--trials", "12", "--recovery-steps", "30", "--workers", "2"],
}


def run_search(name: str, run_dir: Path, seed: int) -> dict[str, Any]:
    """Run one search with the CLI unless its folder already holds a finished run."""
    if (run_dir / "study.db").exists():
        return {"ran_here": False}
    cmd = ["hwnas", "search", TASK, "--budget", BUDGET, "--seed", str(seed),
           "--run", str(run_dir), *RUNS[name]]  # fmt: skip
    print("running:", " ".join(cmd), flush=True)
    sampler = common.LoadSampler()
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"ran_here": True, "command_s": time.perf_counter() - start,
            "load": sampler.stop(), "command": " ".join(cmd)}  # fmt: skip


def summarise(run_dir: Path) -> dict[str, Any]:
    """Counts, wall time, throughput, halving and the best measured trial of a run folder."""
    from optuna.trial import TrialState

    import nas

    run = nas.read_run(run_dir)
    trials = run.trials()
    ended = [t for t in trials if t.datetime_complete is not None]
    start = min(t.datetime_start for t in trials if t.datetime_start is not None)
    end = max(t.datetime_complete for t in ended)
    hours = (end - start).total_seconds() / 3600
    finished = sum(t.state == TrialState.COMPLETE for t in trials)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    full = int(run.settings.recovery_steps)
    steps = sum(  # a trial's recovery steps in all: its last rung's, or the full recovery
        int((t.user_attrs.get("rungs") or [{"steps": full}])[-1]["steps"])
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    )
    best = None
    try:
        row = run.best_trial()
        best = {"trial": row.number, "accuracy": row.accuracy, "summary": row.summary,
                "latency_ms_measured": (row.measured or {}).get("latency_ms")}  # fmt: skip
    except nas.RunError as exc:
        best = {"none": str(exc)}
    return {
        "trials_ended": len(ended),
        "finished": finished,
        "stopped_early": pruned,
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "search_minutes": 60 * hours,
        "trials_per_hour": len(ended) / hours if hours else None,
        "recovery_steps_run": steps,
        "recovery_steps_per_hour": steps / hours if hours else None,
        "halving": run.user_attrs.get("halving"),
        "base": run.base,
        "budget": run.budget,
        "best_measured_within_budget": best,
    }


def export_best(run_dir: Path, out: Path) -> dict[str, Any]:
    """Export the run's chosen trial with the CLI (unless ``out`` holds one); its report."""
    if not (out / "report.json").exists():
        subprocess.run(["hwnas", "export", str(run_dir), "--out", str(out), "--force"],
                       check=True)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    return {key: report.get(key) for key in
            ("trial", "selection", "summary", "accuracy", "measured", "budget_met")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--only", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=common.RESULTS / "edge_search.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": common.machine(), "task": TASK, "budget": BUDGET,
                               "runs": {}}  # fmt: skip
    if args.out.exists():
        results["runs"] = json.loads(args.out.read_text()).get("runs", {})
    for name in args.only:
        run_dir = args.runs / name
        launched = run_search(name, run_dir, args.seed)
        entry = results["runs"].get(name, {}) if not launched["ran_here"] else {}
        entry.update({k: v for k, v in launched.items() if k != "ran_here"})
        entry.update({"arguments": RUNS[name], **summarise(run_dir)})
        results["runs"][name] = entry
        print(
            name,
            json.dumps(
                {k: entry[k] for k in ("trials_ended", "search_minutes", "trials_per_hour")}
            ),
            flush=True,
        )
    if "halving" in args.only:  # the check: within 1 point of the base, >= 2x faster
        entry = results["runs"]["halving"]
        entry["export"] = export_best(args.runs / "halving", args.runs / "halving-export")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
