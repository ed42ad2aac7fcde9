"""Print the Markdown tables of experiments 1-4 from their results files.

    python experiments/tables.py [--results experiments/results]

The tables in experiments/README.md sections 1-4 are this script's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


_PREDICTOR_ROWS = (
    ("combined", "**combined** (default with kernel times)"),
    ("additive", "additive (default without)"),
    ("kernel", "kernel"),
    ("additive-gbt", "additive-gbt"),
    ("graph-gbt", "graph-gbt"),
    ("flops", "FLOPs baseline"),
)
_PREDICTOR_PARTS = ("all", "out_of_family", "sweep_held_out", "second_other_families")


def predictor_accuracy(d: dict[str, Any]) -> str:
    def cell(m: dict[str, Any]) -> str:
        return f"{100 * m['within_10']:.1f}% / {m['mape']:.1f}% / {m['kendall']:.3f}"

    n_sweep = d["n_test"] - d["n_test_other_families"]
    out = [
        f"| device | predictor | all {d['n_test']} | other families "
        f"({d['n_test_other_families']}) | unseen sweep ({n_sweep}) | second set "
        f"({d['n_second_other_families']}) |",
        "|---|---|---|---|---|---|",
        "| | | within ±10% / MAPE / Kendall τ | | | |",
    ]
    for device, r in d["devices"].items():
        for key, label in _PREDICTOR_ROWS:
            if key not in r["predictors"]:
                continue
            cells = [cell(r["predictors"][key][part]) for part in _PREDICTOR_PARTS]
            if key == "combined":
                cells = [f"**{c}**" for c in cells]
            out.append(f"| {device} | {label} | " + " | ".join(cells) + " |")
        fresh = r.get("repeat_session", {})
        if fresh:
            first = cell(fresh["first_set"]["metrics"])
            second = cell(fresh["second_set"]["metrics"])
            out.append(f"| {device} | *a fresh measurement* | *{first}* | | | *{second}* |")
            if "metrics_drift_removed" in fresh["first_set"]:  # files that record the drift
                ratios = "/".join(
                    f"{fresh[part]['median_ratio_to_labels']:.3f}"
                    for part in ("first_set", "second_set")
                )
                first = cell(fresh["first_set"]["metrics_drift_removed"])
                second = cell(fresh["second_set"]["metrics_drift_removed"])
                out.append(
                    f"| {device} | *the same, divided by its median ratio to the labels "
                    f"(x{ratios})* | *{first}* | | | *{second}* |"
                )
        halves = r.get("label_split_half")
        if halves:  # results files that score the labels' split halves
            first, second = cell(halves["first_set"]), cell(halves["second_set"])
            if "splits" in halves["first_set"]:  # results files that score all 20 splits
                lo, hi = (100 * v for v in halves["first_set"]["within_10_range"])
                n = halves["first_set"]["splits"]
                what = f"mean of {n} splits; ±10%: {lo:.1f} to {hi:.1f}%"
                out.append(
                    f"| {device} | *labels of three sessions against the other three ({what})* "
                    f"| *{first}* | | | *{second}* |"
                )
                first = cell(halves["first_set"]["odd_even"])
                second = cell(halves["second_set"]["odd_even"])
            out.append(
                f"| {device} | *labels of the odd sessions against the even ones* | *{first}* "
                f"| | | *{second}* |"
            )
    out.append("")
    for device, r in d["devices"].items():
        floor = ", ".join(
            f"{g} {v['spread_pct']:.1f}%" for g, v in r.get("noise_floor", {}).items()
        )
        sp = r.get("speed", {})
        out.append(
            f"{device}: device check spread {floor}; predicting {sp.get('n')} graphs "
            f"{1e3 * sp.get('predict_s', 0) / max(sp.get('n', 1), 1):.3f} ms a graph, "
            f"{sp.get('ratio_harness', 0):.0f}x faster than the harness "
            f"({sp.get('harness_s_per_graph', 0):.3f} s a graph; distinct graphs "
            f"{sp.get('ratio_harness_distinct', 0):.0f}x); mix "
            f"{r['predictors'].get('combined', {}).get('kernel_weight')}; load "
            f"{r['load_before']:.2f} before, {r['load_after']:.2f} after."
        )
    return "\n".join(out)


def search_vs_baselines(d: dict[str, Any]) -> str:
    out = [_svb_summary(d), ""]
    for task, t in d["tasks"].items():
        base_ms = t["base_latency_ms_interleaved"]
        budget = t["search_budget"]["latency_ms"]
        how = "of the base measured at the start" if str(budget).endswith("x") else "(predicted)"
        out.append(
            f"**{task}** — base: top-1 {t['base']['accuracy']:.2f}%, {base_ms:.4f} ms measured "
            f"(predicted {t['base']['latency_ms']:.4f} ms); search budget "
            f"latency_ms <= {budget} {how}.\n"
        )
        methods = [m for m in ("random", "hwnas") if any(row.get(m) for row in t["budgets"])]
        methods = methods if "hwnas" in methods else [*methods, "hwnas"]
        out.append(
            "| budget (x base, ms) | uniform width | uniform int8 | uniform width+int8 | "
            + " | ".join(f"**{m}**" if m == "hwnas" else f"{m} search" for m in methods)
            + " | hwnas >= every uniform within budget |"
        )
        out.append("|---" * (5 + len(methods)) + "|")
        for row in t["budgets"]:
            cells = [f"{row['fraction']:g} ({row['limit_ms']:.4f})"]
            for key in ("uniform width", "uniform int8", "uniform width+int8", *methods):
                p = row.get(key)
                if p is None:
                    cells.append("none meets it")
                else:
                    label = p.get("name") or f"trial {p.get('trial')}"
                    cells.append(
                        f"{p['accuracy']:.1f}% @ {p['latency_ms']:.4f} ms "
                        f"({base_ms / p['latency_ms']:.2f}x, {label})"
                    )
            met = row.get("beats_best_uniform_under_budget") if row.get("hwnas") else False
            cells.append("yes" if met else "**no**")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append("| uniform baseline | top-1 % (ONNX) | measured ms | speedup |")
        out.append("|---|---|---|---|")
        for b in sorted(t["baselines"], key=lambda b: b["latency_ms"]):
            out.append(
                f"| {b['name']} | {b['accuracy']:.1f} | {b['latency_ms']:.4f} | "
                f"{base_ms / b['latency_ms']:.2f}x |"
            )
        out.append("")
        out.append(
            "| exported search trial | summary | search top-1 | ONNX top-1 | predicted ms "
            "| measured ms | speedup |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for e in sorted(t["exports"].values(), key=lambda e: e.get("latency_ms", 9e9)):
            if "error" in e:
                out.append(f"| {e['method']} t{e['trial']} | export failed: {e['error'][:80]} |")
                continue
            flag = " (int8 check failed)" if e.get("verification_failed") else ""
            out.append(
                f"| {e['method']} t{e['trial']} | {e['summary']}{flag} | "
                f"{e['search_accuracy']:.1f} | {e['accuracy']:.1f} | {e['predicted_ms']:.4f} | "
                f"{e['latency_ms']:.4f} | {base_ms / e['latency_ms']:.2f}x |"
            )
        out.append("")
        hv = {m: (h[-1][1] if h else 0.0) for m, h in t["hypervolume"].items()}
        n = {m: len(h) for m, h in t["hypervolume"].items()}
        out.append(
            "Hypervolume of the feasible front after "
            + ", ".join(f"{m} {n[m]} trials: **{hv[m]:.4f}**" for m in hv)
            + "."
        )
        meas = t.get("hwnas_measurement")
        if meas:
            out.append(
                f"hwnas measured {meas['n_measured']} candidates in {meas['measure_s']:.1f} s "
                f"of a {meas['search_s']:.0f} s search ({100 * (meas['share'] or 0):.1f}%); the "
                f"latency predictor's median error by quarter of the run: "
                f"{meas['quarters_median_error_pct']} % ({meas['refits']} recalibrations)."
            )
        out.append(f"Wall time by stage (s): {t['timings_s']}.")
        out.append("")
    out.append(f"Load (1-min average) during the run: {d.get('load')}; wall {d.get('wall_s')} s.")
    return "\n".join(out)


def _svb_summary(d: dict[str, Any]) -> str:
    """One row per task and seed: hwnas's pick at each budget against the uniform baselines."""
    out = [
        "| task, seed | budget | hwnas pick (measured) | best uniform within budget | "
        "within budget | >= every uniform |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in d["tasks"].items():
        base_ms = t["base_latency_ms_interleaved"]
        for row in t["budgets"]:
            hw = row.get("hwnas")
            uniform = [row.get(f"uniform {f}") for f in ("width", "int8", "width+int8")]
            best = max((u for u in uniform if u), key=lambda u: u["accuracy"], default=None)
            pick = "none meets it"
            if hw is not None:
                speed = base_ms / hw["latency_ms"]
                pick = f"{hw['accuracy']:.1f}% @ {speed:.2f}x (t{hw.get('trial')})"
            rival = "none" if best is None else f"{best['accuracy']:.1f}% ({best['name']})"
            within = "-" if hw is None else "yes"
            beats = (
                "yes"
                if hw is not None and row.get("beats_best_uniform_under_budget")
                else "**no**"
            )
            out.append(
                f"| {task} | {row['fraction']:g}x | {pick} | {rival} | {within} | {beats} |"
            )
    return "\n".join(out)


def speedup(d: dict[str, Any]) -> str:
    b = d["base"]
    out = [
        "| model | summary | ONNX top-1 % | measured ms | speedup | ONNX bytes | weight bytes |",
        "|---|---|---|---|---|---|---|",
        f"| base | fp32 | {b['accuracy']:.1f} | {b['latency_ms']:.4f} | 1.00x | "
        f"{b['onnx_bytes']} | {b['weight_bytes']} |",
    ]
    for c in sorted(d["candidates"], key=lambda c: c.get("latency_ms", 9e9)):
        if "error" in c:
            out.append(f"| t{c['trial']} | export failed: {c['error'][:90]} | | | | | |")
            continue
        mark = "**" if d["best"] and c["trial"] == d["best"]["trial"] else ""
        within = "" if c["within"] else " (more than 1 point lost)"
        out.append(
            f"| {mark}t{c['trial']}{mark} | {c['summary']}{within} | {c['accuracy']:.1f} | "
            f"{c['latency_ms']:.4f} | {c['speedup']:.2f}x | {c['onnx_bytes']} "
            f"({c['onnx_size_reduction']:.1f}x smaller) | {c['weight_bytes']} "
            f"({c['weight_size_reduction']:.1f}x smaller) |"
        )
    s = d["smallest_config"]
    out.append("")
    out.append(
        f"Cheapest config of the space ({s['summary']}, untrained): {s['latency_ms']:.4f} ms, "
        f"{s['speedup_ceiling']:.2f}x — the ceiling of any speedup in this space."
    )
    out.append(f"Target >= {d['target_speedup']:g}x: {'met' if d['target_met'] else 'MISSED'}.")
    out.append(f"Load during the run: {d['load']}; wall {d['wall_s']} s.")
    return "\n".join(out)


def throughput(d: dict[str, Any]) -> str:
    out = [
        "| workers | trials | failed | minutes | completed trials/min | load1 mean (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for w, r in d["runs"].items():
        ld = r.get("load_during", {})
        out.append(
            f"| {w} | {r['trials']} | {r['counts'].get('FAIL', 0)} | {r['minutes']} | "
            f"{r.get('completed_per_min', r['trials_per_min'])} | "
            f"{ld.get('load1_mean')} ({ld.get('load1_min')}-{ld.get('load1_max')}) |"
        )
    runs = list(d["runs"].values())
    if len(runs) >= 2 and runs[0]["trials_per_min"]:
        out.append("")
        out.append(
            f"Speedup with {runs[1]['workers']} workers: "
            f"{runs[1]['trials_per_min'] / runs[0]['trials_per_min']:.2f}x."
        )
    out.append("")
    out.append("| phase (1-worker run) | seconds, summed | per trial | share |")
    out.append("|---|---|---|---|")
    ph = runs[0]["phases_s"]
    total = ph["sum_s"]["total"] or 1.0
    for key in ("apply", "export", "predict", "train", "eval", "other"):
        out.append(
            f"| {key} | {ph['sum_s'][key]:.1f} | {ph['per_trial_s'][key]:.3f} | "
            f"{100 * ph['sum_s'][key] / total:.0f}% |"
        )
    out.append(f"| all trials | {total:.1f} | {ph['per_trial_s']['total']:.3f} | 100% |")
    ver = d.get("verification") or {}
    if ver:
        out.append(
            f"| verification: export + measure {ver.get('n_trials')} front trials | "
            f"{ver.get('seconds')} | | |"
        )
    fid = d.get("fidelity") or {}
    if fid:
        out.append(
            f"| fidelity check ({len(fid.get('trials', {}))} trials x {fid.get('long_steps')} "
            f"steps) | {fid.get('seconds')} | | |"
        )
        out.append("")
        out.append(f"Fidelity: Kendall tau {fid.get('kendall_tau')} (short vs long recovery).")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    folder = Path(args.results)
    for name, render in (
        ("predictor_accuracy.json", predictor_accuracy),
        ("search_vs_baselines.json", search_vs_baselines),
        ("speedup_at_accuracy.json", speedup),
        ("search_throughput.json", throughput),
    ):
        path = folder / name
        if path.is_file():
            print(f"### {name}\n")
            try:
                print(render(json.loads(path.read_text())))
            except KeyError as exc:
                print(f"(not in this script's format: missing {exc})")
            print()


if __name__ == "__main__":
    main()
