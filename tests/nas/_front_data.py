"""Synthetic run folders and results for the Pareto/plot/report tests (no training)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import optuna

from nas.results._pareto import RunResults, TrialRow, pareto_mask

OBJECTIVES = ("accuracy", "latency_ms", "memory_mb")
BASE = {"accuracy": 97.0, "latency_ms": {"predicted": 1.0, "measured": 1.1}, "memory_mb": 2.0}
BUDGET = {"latency_ms": 0.8, "accuracy_drop": 3.0}
GROUPS = ("stem", "layer1", "layer2")


def config_for(widths: dict[str, int], bits: dict[str, int]) -> dict[str, Any]:
    return {
        "_type": "CompressionConfig",
        "version": 1,
        "widths": widths,
        "ranks": {"fc": None},
        "bits": bits,
        "dropped_blocks": [],
    }


def synthetic_trials(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n trials: params, objective values, constraints, user attrs."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        widths = {g: rng.choice([8, 16, 24, 32]) for g in GROUPS}
        bits = {f"{g}.conv": rng.choice([32, 8]) for g in GROUPS}
        frac = sum(widths.values()) / (32 * len(GROUPS))
        lat = round(0.2 + 0.8 * frac * (0.6 if 8 in bits.values() else 1.0), 4)
        mem = round(2.0 * frac * (0.5 if 8 in bits.values() else 1.0), 4)
        acc = round(90 + 7 * frac - rng.random() * 2, 3)
        cons = {"latency_ms": lat - BUDGET["latency_ms"], "accuracy_drop": (97 - acc) - 3.0}
        ua = {
            "config": config_for(widths, bits),
            "summary": f"width {frac:.2f}, {sum(b == 8 for b in bits.values())}/3 layers int8",
            "predicted": {"latency_ms": lat, "memory_mb": mem, "energy_mj": lat * 3},
            "energy_source": "estimated",
            "accuracy": acc,
            "rejected_before_training": False,
        }
        out.append(
            {
                "params": {
                    **{f"width.{g}": w for g, w in widths.items()},
                    **{f"bits.{k}": b for k, b in bits.items()},
                },
                "values": [acc, lat, mem],
                "constraints": cons,
                "user_attrs": ua,
            }
        )
    return out


def make_fake_run(
    run_dir: Path, n: int = 12, *, n_failed: int = 1, seed: int = 0, measure_front: bool = True
) -> Path:
    """A run folder shaped like the search's (settings.json + study.db), filled directly."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(
        json.dumps(
            {
                "task": "digits-resnet",
                "device": "local-cpu",
                "objectives": list(OBJECTIVES),
                "budget": BUDGET,
                "n_trials": n,
                "sampler": "tpe",
                "seed": seed,
                "run_dir": str(run_dir),
                "storage": None,
            }
        )
    )
    storage = f"sqlite:///{run_dir / 'study.db'}"
    study = optuna.create_study(
        study_name="hwnas", storage=storage, directions=["maximize", "minimize", "minimize"]
    )
    study.set_user_attr("task", "digits-resnet")
    study.set_user_attr("device", "local-cpu")
    study.set_user_attr("objectives", list(OBJECTIVES))
    study.set_user_attr("budget", BUDGET)
    study.set_user_attr("base", BASE)
    study.set_user_attr("hwnas_version", "0.1.0")
    dists = {
        **{f"width.{g}": optuna.distributions.IntDistribution(8, 32, step=8) for g in GROUPS},
        **{
            f"bits.{g}.conv": optuna.distributions.CategoricalDistribution([32, 8]) for g in GROUPS
        },
    }
    specs = synthetic_trials(n, seed)
    feasible = [all(v <= 0 for v in s["constraints"].values()) for s in specs]
    mask = pareto_mask(
        [s["values"] for s in specs], ["maximize", "minimize", "minimize"], feasible
    )
    trials = []
    for s, on_front in zip(specs, mask, strict=False):
        ua = dict(s["user_attrs"])
        if measure_front and on_front:
            ua["measured"] = {
                "latency_ms": s["values"][1] * 1.08,
                "memory_mb": s["values"][2],
                "energy_mj": None,
            }
        trials.append(
            optuna.trial.create_trial(
                params=s["params"],
                distributions=dists,
                values=s["values"],
                user_attrs=ua,
                system_attrs={f"constraints:{k}": v for k, v in s["constraints"].items()},
            )
        )
    for _ in range(n_failed):
        trials.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL, user_attrs={"error": "RuntimeError: boom"}
            )
        )
    study.add_trials(trials)
    return run_dir


def make_results(
    n: int = 12, seed: int = 0, objectives: tuple[str, ...] = OBJECTIVES
) -> RunResults:
    """RunResults built in memory (no storage) from the synthetic trials."""
    specs = synthetic_trials(n, seed)
    idx = [OBJECTIVES.index(o) for o in objectives]
    dirs = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
    rows = []
    for i, s in enumerate(specs):
        vals = {o: s["values"][j] for o, j in zip(objectives, idx, strict=False)}
        rows.append(
            TrialRow(
                number=i,
                values=vals,
                budget_met=all(v <= 0 for v in s["constraints"].values()),
                constraints=s["constraints"],
                summary=s["user_attrs"]["summary"],
                config=s["user_attrs"]["config"],
                params=s["params"],
                energy_source="estimated",
            )
        )
    mask = pareto_mask(
        [[r.values[o] for o in objectives] for r in rows], dirs, [r.budget_met for r in rows]
    )
    from dataclasses import replace

    rows = [
        replace(
            r,
            pareto=m,
            measured={"latency_ms": r.values.get("latency_ms", 0) * 1.05}
            if m and "latency_ms" in objectives
            else {},
        )
        for r, m in zip(rows, mask, strict=False)
    ]
    return RunResults.from_rows(
        Path("runs/synthetic"),
        objectives=objectives,
        settings={"task": "digits-resnet", "device": "local-cpu"},
        base=BASE,
        budget=BUDGET,
        rows=tuple(rows),
    )
