"""How the runtimes rank the same compressed models, and where their searches' fronts differ.

Input: one search run per runtime device on the same task and budget (e.g. ``hwnas demo
--device local-ncnn --quick --run DIR``). Every trained trial of every run is re-applied to
the task's model and exported as the search exports it (latency does not depend on the
weights); each graph is measured on every runtime device that can run it (fp32 everywhere,
int8 only where the runtime has an int8 path), in interleaved rounds, medians, one thread.

Beside them, ``--random`` random fp32 configs of the task's space widen the latency range
the rankings are compared over.

Written: Kendall's tau between every pair of runtimes over the graphs both measured; each
runtime's accuracy-vs-latency front over the union of trials (the accuracy is the one its
search measured); and the trial each run exported, measured on every runtime.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/runtime_ranking.py \\
        --runs local-cpu=/tmp/demos/cpu,local-openvino=/tmp/demos/ov,local-ncnn=/tmp/demos/ncnn
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, LoadSampler, machine, measure_interleaved, one_thread, pareto_2d


def _trained_trials(run_dir: Path) -> list[dict[str, Any]]:
    """Config, accuracy and exported flag of each trained trial of a run folder."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="hwnas", storage=f"sqlite:///{run_dir / 'study.db'}")
    report = run_dir / "export" / "report.json"
    exported = json.loads(report.read_text())["trial"] if report.is_file() else None
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        accuracy = t.user_attrs.get("accuracy")
        if accuracy is None or "config" not in t.user_attrs:
            continue  # rejected before training: no accuracy to compare
        rows.append(
            {
                "trial": t.number,
                "config": t.user_attrs["config"],
                "summary": t.user_attrs.get("summary", ""),
                "accuracy": float(accuracy),
                "exported": t.number == exported,
            }
        )
    return rows


def _export(task: Any, config_dict: dict[str, Any], path: Path, *, align: int) -> None:
    from search_spaces import CompressionConfig, analyze, export_onnx

    config = CompressionConfig.from_dict(config_dict)
    space = analyze(task.model, task.example_input, align=align, bits=(32, 8))
    model = space.apply(task.model, config)
    export_onnx(model, config, task.example_input, path, calibration=task.train[0][:16])


def _is_int8(config: dict[str, Any]) -> bool:
    return any(b == 8 for b in (config.get("bits") or {}).values())


def _kendall(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    from scipy.stats import kendalltau

    common = sorted(set(a) & set(b))
    if len(common) < 3:
        return {"n": len(common), "tau": None}
    tau = kendalltau([a[k] for k in common], [b[k] for k in common]).statistic
    return {"n": len(common), "tau": round(float(tau), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="device=run_dir,... one run per runtime")
    parser.add_argument("--random", type=int, default=20, help="random fp32 configs added")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=0.5)
    parser.add_argument("--out", default=str(RESULTS / "runtime_ranking.json"))
    args = parser.parse_args()
    one_thread()

    import onnx

    from latency_models import get_device
    from nas import load_task
    from nas.searching._profile import task_variant_graphs

    runs = dict(item.split("=", 1) for item in args.runs.split(","))
    tasks = {json.loads((Path(d) / "settings.json").read_text())["task"] for d in runs.values()}
    if len(tasks) != 1:
        raise SystemExit(f"the runs searched different tasks {sorted(tasks)}; give runs of one")
    task = load_task(tasks.pop())
    load = LoadSampler()
    candidates: dict[str, dict[str, Any]] = {}
    for device, run_dir in runs.items():
        for row in _trained_trials(Path(run_dir)):
            key = json.dumps(row["config"], sort_keys=True)
            entry = candidates.setdefault(
                key, {**row, "from": [], "align": get_device(device).align}
            )
            entry["from"].append(
                {"run": device, "trial": row["trial"], "exported": row["exported"]}
            )
    names = {key: f"c{i}" for i, key in enumerate(candidates)}
    latency: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        for key, entry in candidates.items():
            paths[names[key]] = Path(tmp) / f"{names[key]}.onnx"
            _export(task, entry["config"], paths[names[key]], align=entry["align"])
        for name, graph in task_variant_graphs(task, n=args.random + 2, seed=1, bits=(32,)):
            if name.endswith(("identity", "smallest")):
                continue
            rname = f"r{len(paths)}"
            paths[rname] = Path(tmp) / f"{rname}.onnx"
            onnx.save(graph, str(paths[rname]))
        for device in runs:
            int8 = 8 in get_device(device).precisions
            graphs = {
                names[k]: paths[names[k]]
                for k, e in candidates.items()
                if int8 or not _is_int8(e["config"])
            } | {n: p for n, p in paths.items() if n.startswith("r")}
            timed = measure_interleaved(
                graphs, device, rounds=args.rounds, max_seconds=args.max_seconds
            )
            latency[device] = {n: round(float(r["latency_ms"]), 5) for n, r in timed.items()}
            print(f"{device}: {len(graphs)} graphs measured", flush=True)
    fp32 = {names[k] for k, e in candidates.items() if not _is_int8(e["config"])}
    fp32 |= {n for n in paths if n.startswith("r")}
    tau = {
        f"{a} vs {b}": {
            "all_common": _kendall(latency[a], latency[b]),
            "fp32": _kendall(
                {k: v for k, v in latency[a].items() if k in fp32},
                {k: v for k, v in latency[b].items() if k in fp32},
            ),
        }
        for a, b in combinations(latency, 2)
    }
    accuracy = {names[k]: e["accuracy"] for k, e in candidates.items()}
    fronts = {}
    for device, lat in latency.items():
        trained = [n for n in lat if n in accuracy]
        front = set(pareto_2d([(lat[n], accuracy[n]) for n in trained]))
        fronts[device] = sorted(
            (n for n in trained if (lat[n], accuracy[n]) in front), key=lambda n: lat[n]
        )
    exported = {
        ",".join(f["run"] for f in e["from"] if f["exported"]): {
            "candidate": names[k],
            "summary": e["summary"],
            "accuracy": e["accuracy"],
            "latency_ms": {d: latency[d].get(names[k]) for d in latency},
        }
        for k, e in candidates.items()
        if any(f["exported"] for f in e["from"])
    }
    result = {
        "machine": machine(),
        "load": load.stop(),
        "rounds": args.rounds,
        "runs": runs,
        "candidates": {
            names[k]: {
                "summary": e["summary"],
                "accuracy": e["accuracy"],
                "int8": _is_int8(e["config"]),
                "from": e["from"],
            }
            for k, e in candidates.items()
        },
        "latency_ms": latency,
        "kendall_tau": tau,
        "fronts": fronts,
        "exported": exported,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for pair, t in tau.items():
        print(
            f"{pair}: tau {t['all_common']['tau']} (n={t['all_common']['n']}), "
            f"fp32 {t['fp32']['tau']} (n={t['fp32']['n']})"
        )
    for device, front in fronts.items():
        print(f"{device} front: {', '.join(front)}")


if __name__ == "__main__":
    main()
