"""Test bed for runtime-agnostic latency predictors: cell networks measured on several runtimes.

Generates NAS-Bench-201-like cell networks (``_cells.py``) in families, measures each on each
runtime (onnxruntime at two optimisation levels, plus any runtime ``latency_models.runtimes``
offers), and for N = 20 / 100 / 300 training graphs fits the predictor ``hwnas device fit``
saves for such a device (:func:`latency_models.fit_predictor` on op-level features, model
chosen on family-held-out folds) and every candidate it chose among, then scores them on
held-out graphs, two of the families never seen in training. Also reports the labels' own repeat
agreement, the 2%-near-zero robustness check and a few-shot transfer from other runtimes.

    python experiments/predictor_testbed.py --n-graphs 600 --seconds-per-graph 0.25

Writes ``results.json`` and ``results.md`` to ``--out``; labels are cached in
``--out/labels.json`` so reruns do not remeasure. Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _cells import FAMILIES, UNALIGNED_SEEN, CellGraph, generate_graphs

from latency_models import fit_predictor
from latency_models.features._oplevel import OPLEVEL_FEATURES, oplevel_matrix
from latency_models.measurement._bench import host_info
from latency_models.predictors._baselines import opcount_columns
from latency_models.predictors._choice import (
    choose_model,
    default_candidates,
    fold_indices,
    out_of_fold_predictions,
    score_predictions,
)
from latency_models.predictors._robust import warn_suspicious_labels
from latency_models.predictors._transfer import (
    TransferRegressor,
    label_curve,
    stack_references,
    suggest_next,
)
from latency_models.profiling._fit import FEW_SHOT_TIE

OUT = Path(__file__).resolve().parent / "results" / "predictor_testbed"
MACS = OPLEVEL_FEATURES.index("mmacs_total")
FEW_FEATURES = [OPLEVEL_FEATURES.index(n) for n in ("mmacs_total", "mbytes_total", "count_total")]
ORT_LEVELS = {"ort-all": "ORT_ENABLE_ALL", "ort-basic": "ORT_ENABLE_BASIC"}


class _OrtSession:
    """One onnxruntime session: one intra-op thread, sequential, random input."""

    def __init__(self, model_bytes: bytes, level: str, seed: int) -> None:
        import onnx
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(seed)
        self.feeds = {
            i.name: rng.random([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32)
            for i in onnx.load_from_string(model_bytes).graph.input
        }

    def run(self) -> None:
        self.session.run(None, self.feeds)

    def close(self) -> None:
        del self.session


def available_runtimes() -> dict[str, Callable[[bytes], Any]]:
    """Runtime name -> ``prepare(model_bytes)``; package runtimes when importable."""
    found: dict[str, Callable[[bytes], Any]] = {
        name: (lambda b, lv=level: _OrtSession(b, lv, seed=0))
        for name, level in ORT_LEVELS.items()
    }
    try:
        from latency_models.runtimes import get_runtime, runtime_names
    except Exception as exc:  # not written yet, or a runtime's import fails
        print(f"latency_models.runtimes not usable ({type(exc).__name__}: {exc}); ORT only")
        return found
    for name in runtime_names():
        if not get_runtime(name).available():
            continue
        found[name] = lambda b, n=name: get_runtime(n).prepare(b, threads=1, batch_size=1, seed=0)
    return found


def time_graph(prepared: Any, seconds: float) -> float:
    """Median wall time (ms) of single runs over ``seconds``, after a warm-up."""
    for _ in range(2):
        prepared.run()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        prepared.run()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def _measure_one(
    prepare: Callable[[bytes], Any], graph: CellGraph, seconds: float
) -> float | None:
    prepared = None
    try:
        prepared = prepare(graph.model_bytes)
        return time_graph(prepared, seconds)
    except Exception as exc:  # a runtime may refuse or fail a graph: record it, go on
        print(f"  {graph.name}: {type(exc).__name__}: {exc}")
        return None
    finally:
        if prepared is not None:
            prepared.close()


def measure_all(
    graphs: Sequence[CellGraph],
    runtimes: dict[str, Callable[[bytes], Any]],
    *,
    seconds: float,
    cache_path: Path,
    repeat_share: float,
    seed: int,
    fresh: bool = False,
) -> tuple[dict[str, dict[str, list[float | None]]], dict[str, Any] | None]:
    """Labels per runtime and graph digest ([first] or [first, repeat]), cached in JSON, and
    the CPU that took them (``cpu_model``, ``nchwc_block``; None when the cache predates it).

    Cached labels are reused (``fresh`` ignores them) after :func:`check_epoch`.
    """
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() and not fresh else {}
    labels: dict[str, dict[str, list[float | None]]] = cache.get("labels", {})
    here = {k: v for k, v in host_info().items() if k in ("cpu_model", "nchwc_block")}
    host = cache.get("host") if cache else here
    digests = {g.digest for g in graphs}
    for name in runtimes:  # graphs no longer generated drop out of the cache
        labels[name] = {d: v for d, v in labels.get(name, {}).items() if d in digests}
    rng = np.random.default_rng(seed)
    n_repeat = min(len(graphs), max(10, round(repeat_share * len(graphs))))
    repeat = set(rng.choice(len(graphs), size=n_repeat, replace=False).tolist())
    # first pass in graph order, runtimes interleaved; the repeat pass comes after, shuffled
    passes = [(i, 1) for i in range(len(graphs))] + [
        (i, 2) for i in rng.permutation(sorted(repeat))
    ]
    missing = {
        name
        for name in runtimes
        for i, k in passes
        if len(labels[name].get(graphs[i].digest, [])) < k
    }
    if missing and cache:
        if host is not None and host != here:
            raise SystemExit(
                f"the cached labels were taken on another CPU ({host}, this one is {here}); "
                f"new labels would mix two machines. Remeasure every runtime with --fresh."
            )
        check_epoch(graphs, {n: runtimes[n] for n in sorted(missing)}, labels, seconds, seed)
    t0, done = time.perf_counter(), 0
    spent: dict[str, float] = {}
    for i, k in passes:
        g = graphs[i]
        for name in rng.permutation(list(runtimes)):
            have = labels[name].setdefault(g.digest, [])
            if len(have) < k:
                t = time.perf_counter()
                have.append(_measure_one(runtimes[name], g, seconds))
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
                done += 1
        if done and i % 25 == 0:
            _save(cache_path, labels, seconds, host)
            print(f"  measured {done} ({time.perf_counter() - t0:.0f} s)", flush=True)
    _save(cache_path, labels, seconds, host)
    if spent:  # conversion and compilation dominate for some runtimes
        print(f"  seconds per runtime: { {k: round(v) for k, v in spent.items()} }")
    return labels, host


DRIFT_LIMIT = 1.15
"""Cached labels are topped up only if re-timed ones agree within this factor (median)."""


def check_epoch(
    graphs: Sequence[CellGraph],
    runtimes: dict[str, Callable[[bytes], Any]],
    labels: dict[str, dict[str, list[float | None]]],
    seconds: float,
    seed: int,
    k: int = 8,
) -> None:
    """Refuse to top up a runtime's cached labels when the machine now runs at another speed.

    The machine behind a session can change (labels taken on an AVX-512 CPU re-timed 1.33x
    slower on onnxruntime and OpenVINO and 1.81x on NCNN on an AVX2 one), and labels of two
    speeds in one fit read as a defect of the features. Re-times ``k`` cached graphs of each
    runtime that still needs labels and exits, naming the ratio, when the median is off.
    """
    rng = np.random.default_rng(seed + 7)
    for name, prepare in runtimes.items():
        cached = [g for g in graphs if (labels[name].get(g.digest) or [None])[0]]
        if len(cached) < k:
            continue
        ratios = []
        for j in rng.choice(len(cached), size=k, replace=False):
            g = cached[j]
            now = _measure_one(prepare, g, seconds)
            if now is not None:
                ratios.append(now / labels[name][g.digest][0])
        ratio = float(np.median(ratios)) if ratios else 1.0
        print(f"  {name}: {len(ratios)} cached graphs re-timed at {ratio:.2f}x their labels")
        if not 1 / DRIFT_LIMIT <= ratio <= DRIFT_LIMIT:
            raise SystemExit(
                f"{name}: cached graphs re-timed at {ratio:.2f}x their stored labels (the "
                f"machine runs at another speed than when they were taken); new labels would "
                f"mix two states. Remeasure every runtime together with --fresh, or rerun "
                f"when the machine is back to the labels' speed."
            )


def _save(path: Path, labels: dict[str, Any], seconds: float, host: dict[str, Any] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = {"format": 1, "seconds_per_graph": seconds, "host": host, "labels": labels}
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def split(graphs: Sequence[CellGraph], holdout_families: int, sizes: Sequence[int], seed: int):
    """Shuffled in-family pool (training prefixes) and the test set (rest + held families)."""
    held = {f.name for f in FAMILIES[len(FAMILIES) - holdout_families :]}
    rng = np.random.default_rng(seed + 1)
    pool = rng.permutation([i for i, g in enumerate(graphs) if g.family not in held])
    usable = [n for n in sizes if n <= 0.6 * len(pool)] or [int(0.6 * len(pool))]
    test = np.array(
        sorted([*pool[max(usable) :], *(i for i, g in enumerate(graphs) if g.family in held)])
    )
    return pool, usable, test, held


def _test_scores(
    y: np.ndarray, pred: np.ndarray, test: np.ndarray, subsets: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Scores on the whole test set and on each subset (boolean masks over all graphs)."""
    out = {"all": score_predictions(y[test], pred[test])}
    for name, mask in subsets.items():
        keep = test[mask[test]]
        if keep.size >= 3:
            out[name] = score_predictions(y[keep], pred[keep])
    return out


def fit_wired(X: np.ndarray, y: np.ndarray, fam: np.ndarray) -> Any:
    """The predictor ``hwnas device fit`` would save for a device of another runtime.

    Goes through :func:`latency_models.fit_predictor` on op-level features: labels checked,
    wildly inconsistent ones left out, every candidate scored on family-held-out folds.
    """
    return fit_predictor(
        list(X), y, feature_set="oplevel", groups=list(fam), holdout=0,
        names=[f"graph {i}" for i in range(len(y))],
    )  # fmt: skip


def fit_x86(F: Sequence[Any], y: np.ndarray, fam: np.ndarray) -> Any:
    """The predictor ``hwnas device fit`` saves for onnxruntime on this x86 CPU, from labels.

    Kernel features that copy onnxruntime's fusions and NCHWc layout; without profiled
    kernel times the default kind is ``additive`` (the baselines replace it if they win).
    """
    return fit_predictor(
        list(F), y, feature_set="onnxruntime-x86", groups=list(fam), holdout=0,
        names=[f"graph {i}" for i in range(len(y))],
    )  # fmt: skip


def evaluate_runtime(X, y, fam, pool, sizes, test, subsets, x86=None) -> dict[str, Any]:
    """Every candidate at every training size, scored out of fold and on the test set.

    ``x86``: the graphs' onnxruntime-x86 kernel features, for the runtime that is
    onnxruntime with every optimisation on this CPU; its x86 predictor is scored too.
    """
    cands = default_candidates(OPLEVEL_FEATURES)
    out: dict[str, Any] = {}
    for n in sizes:
        tr = pool[:n]
        t = time.perf_counter()
        fitted = fit_wired(X[tr], y[tr], fam[tr])
        scores = fitted.choice_["candidates"]
        row: dict[str, Any] = {"chosen": fitted.kind_, "choice_s": time.perf_counter() - t}
        row["left_out"] = fitted.left_out_
        row["chosen_test"] = _test_scores(y, fitted.predict_features(X), test, subsets)
        if x86 is not None:
            t = time.perf_counter()
            fx = fit_x86([x86[i] for i in tr], y[tr], fam[tr])
            row["x86"] = {
                "kind": getattr(fx, "kind_", None) or type(fx).__name__,
                "fit_s": time.perf_counter() - t,
                "test": _test_scores(y, fx.predict_features(x86), test, subsets),
            }
        row["candidates"] = {}
        for name, spec in cands.items():
            entry: dict[str, Any] = {"oof": scores[name]}
            if "skipped" not in scores[name]:
                model = spec.factory().fit(X[tr], y[tr])
                entry["test"] = _test_scores(y, model.predict(X), test, subsets)
            row["candidates"][name] = entry
        out[str(n)] = row
    return out


def robustness_check(X, y, fam, names, pool, sizes, test, seed) -> dict[str, Any]:
    """Replace 2% of training labels by 0.01-0.14 ms: how far do fits move, who is named?"""
    n = min(sizes, key=lambda s: abs(s - 100))
    tr = pool[:n]
    rng = np.random.default_rng(seed + 2)
    bad = rng.choice(n, size=max(1, round(0.02 * n)), replace=False)
    y_bad = y[tr].copy()
    y_bad[bad] = rng.uniform(0.01, 0.14, bad.size)
    cands = default_candidates(OPLEVEL_FEATURES)
    ops = opcount_columns(OPLEVEL_FEATURES)
    rho: dict[str, dict[str, Any]] = {}
    for label, labels in (("clean", y[tr]), ("corrupted", y_bad)):
        fitted = fit_wired(X[tr], labels, fam[tr])
        rel = _relative_lsq(X[tr][:, ops], labels)(X[test][:, ops])
        rho[label] = {
            "chosen": fitted.kind_,
            "left_out": fitted.left_out_,
            "chosen_spearman": score_predictions(y[test], fitted.predict_features(X[test]))[
                "spearman"
            ],
            "relative_lsq_spearman": score_predictions(y[test], np.maximum(rel, 1e-6))["spearman"],
        }
        for name, spec in cands.items():
            if "skipped" not in fitted.choice_["candidates"][name]:
                pred = spec.factory().fit(X[tr], labels).predict(X[test])
                rho[label][f"{name}_spearman"] = score_predictions(y[test], pred)["spearman"]
    flagged = warn_suspicious_labels(y_bad, X[tr, MACS], [names[i] for i in tr])
    corrupted = [names[tr[i]] for i in bad]
    moves = {
        k.removesuffix("_spearman"): abs(rho["clean"][k] - rho["corrupted"][k])
        for k in rho["clean"]
        if k.endswith("_spearman") and k in rho["corrupted"]
    }
    return {
        "n_train": n,
        "corrupted": corrupted,
        "flagged": flagged,
        "all_corrupted_flagged": set(corrupted) <= set(flagged),
        "spearman": rho,
        "spearman_moves": moves,
        "chosen_move": moves["chosen"],
    }


def _relative_lsq(A: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Least squares weighted by 1/y (relative error): the fit that collapsed, for contrast."""
    M = np.hstack([A, np.ones((len(y), 1))]) / y[:, None]
    coef = np.linalg.lstsq(M, np.ones(len(y)), rcond=None)[0]
    return lambda Z: np.hstack([Z, np.ones((len(Z), 1))]) @ coef


def few_shot(
    X, Y, fam, ref_train, pool, test, subsets, target: str, k: int = 20
) -> dict[str, Any]:
    """``k`` labels on ``target`` plus the other runtimes' fitted models, vs from scratch.

    ``ref_train`` maps each reference runtime to the graphs its model is fitted on.
    """
    cands = default_candidates(OPLEVEL_FEATURES)
    refs = list(ref_train)
    fitted = [
        choose_model(X[tr], Y[r][tr], candidates=cands, groups=fam[tr])
        for r, tr in ref_train.items()
    ]
    R = np.column_stack([np.maximum(m.predict(X), 1e-6) for m in fitted])
    Z = stack_references(R, X[:, FEW_FEATURES])
    y = Y[target]
    out: dict[str, Any] = {"target": target, "references": refs, "k": k}
    rng = np.random.default_rng(0)
    n_ref = len(refs)
    picks = {
        "random": rng.choice(pool, size=k, replace=False),
        "farthest": pool[suggest_next(X[pool], [], k, reference_ms=R[pool])],
    }
    for how, tr in picks.items():
        model = TransferRegressor(n_reference=len(refs)).fit(Z[tr], y[tr])
        scratch = choose_model(X[tr], y[tr], candidates=cands, groups=fam[tr])
        # what `hwnas device fit` does: transfer when its out-of-fold Spearman is no worse
        folds, _ = fold_indices(len(tr), fam[tr], seed=0)
        oof = out_of_fold_predictions(
            lambda: TransferRegressor(n_reference=n_ref), Z[tr], y[tr], folds
        )
        oof_rho = {"transfer": score_predictions(y[tr], oof)["spearman"],
                   "scratch": scratch.scores[scratch.name]["spearman"]}  # fmt: skip
        tie = oof_rho["transfer"] >= oof_rho["scratch"] - FEW_SHOT_TIE
        out[how] = {
            "transfer": _test_scores(y, model.predict(Z), test, subsets),
            "scratch": _test_scores(y, scratch.predict(X), test, subsets),
            "oof_spearman": oof_rho,
            "device_fit_picks": "transfer" if tie else "scratch",
            "scratch_chosen": scratch.name,
            "curve": label_curve(
                Z[tr], y[tr], factory=lambda: TransferRegressor(n_reference=n_ref)
            ),
        }
    return out


def prediction_speed(X, y, fam, pool, features_s: float, args: Any) -> dict[str, Any]:
    """Seconds to predict 10,000 graphs (features included) against measuring them.

    Measuring costs at least ``--seconds-per-graph`` of timed runs per graph, before the
    runtime's session creation or conversion, so the ratio is a lower bound.
    """
    tr = pool[: max(args.train_sizes)]
    model = fit_wired(X[tr], y[tr], fam[tr])
    rows = np.resize(X, (10_000, X.shape[1]))
    t = time.perf_counter()
    model.predict_features(rows)
    predict_s = (time.perf_counter() - t) / len(rows)
    per_graph = features_s + predict_s
    return {
        "model": model.kind_, "features_s_per_graph": features_s,
        "predict_s_per_graph": predict_s, "measure_s_per_graph": args.seconds_per_graph,
        "speedup_at_least": args.seconds_per_graph / per_graph,
    }  # fmt: skip


def repeat_agreement(labels: dict[str, list[float | None]]) -> dict[str, Any]:
    """Share of graphs measured twice whose two labels are within ±10% of each other, and
    the Spearman correlation of the two measurements (what noise leaves of a ranking)."""
    from scipy.stats import spearmanr

    pairs = np.array([v for v in labels.values() if len(v) == 2 and None not in v], dtype=float)
    if len(pairs) == 0:
        return {"n": 0}
    rel = np.abs(pairs[:, 0] - pairs[:, 1]) / pairs.min(axis=1)
    return {
        "n": len(pairs),
        "within_10": float(np.mean(rel <= 0.10)),
        "median_abs_log_ratio": float(np.median(np.abs(np.log(pairs[:, 0] / pairs[:, 1])))),
        "spearman": float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic),
    }


def _fmt(s: dict[str, Any] | None, key: str, pct: bool = False) -> str:
    if not s or s.get(key) is None:
        return "-"
    v = s[key]
    return f"{100 * v:.0f}%" if pct else (f"{v:.1f}" if key == "mape" else f"{v:.3f}")


def markdown(results: dict[str, Any]) -> str:
    """The tables of ``results.md``."""
    cfg = results["config"]
    lines = [
        f"# Predictor test bed: {cfg['n_graphs']} graphs, {cfg['n_cut']} with a cut cell",
        "",
        f"Test set: {cfg['n_test']} graphs, {cfg['n_test_held_families']} of them from the "
        f"held-out families {cfg['held_families']}.",
        "",
    ]
    for rt, ev in results["runtimes"].items():
        lines += _runtime_section(rt, ev)
    for fs in results["few_shot"]:
        lines += _few_shot_section(fs)
    sp = results["speed"]
    lines += [
        f"Predicting 10,000 graphs: {1e3 * sp['features_s_per_graph']:.2f} ms of op-level "
        f"features and {1e6 * sp['predict_s_per_graph']:.1f} us of {sp['model']} prediction "
        f"per graph, at least {sp['speedup_at_least']:.0f}x faster than the "
        f"{sp['measure_s_per_graph']} s of timed runs each measurement takes.",
    ]
    return "\n".join(lines) + "\n"


def _candidate_row(n: str, name: str, c: dict[str, Any], chosen: str) -> str:
    if "skipped" in c["oof"]:
        return f"| {n} | {name} | skipped: {c['oof']['skipped']} | | | | | |"
    mark = " **(chosen)**" if name == chosen else ""
    t = c.get("test", {})
    cells = [
        _fmt(c["oof"], "spearman"),
        _fmt(t.get("all"), "spearman"),
        _fmt(t.get("all"), "within_10", True),
        _fmt(t.get("all"), "mape"),
        _fmt(t.get("held_families"), "spearman"),
        _fmt(t.get("no_cut"), "mape"),
    ]
    return f"| {n} | {name}{mark} | " + " | ".join(cells) + " |"


def _runtime_section(rt: str, ev: dict[str, Any]) -> list[str]:
    rep = ev["repeat"]
    lines = [
        f"## {rt}",
        "",
        f"Repeat agreement (graphs measured twice): {json.dumps(rep)}. Graphs it could not "
        f"run: {len(ev['unmeasured'])} ({ev['unmeasured_cut']} with a cut cell).",
        "",
    ]
    lines += [
        "| N | candidate | OOF Spearman | test Spearman | test ±10% | test MAPE % "
        "| held-out families Spearman | MAPE % without cut graphs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in ev["fits"].items():
        for name, c in row["candidates"].items():
            lines.append(_candidate_row(n, name, c, row["chosen"]))
        if "x86" in row:
            t = row["x86"]["test"]
            cells = [_fmt(t.get("all"), "spearman"), _fmt(t.get("all"), "within_10", True),
                     _fmt(t.get("all"), "mape"), _fmt(t.get("held_families"), "spearman"),
                     _fmt(t.get("no_cut"), "mape")]  # fmt: skip
            lines.append(f"| {n} | x86 kernel features: {row['x86']['kind']} | - | "
                         + " | ".join(cells) + " |")  # fmt: skip
    rb = ev["robustness"]
    lines += [
        "",
        f"Robustness (N={rb['n_train']}, {len(rb['corrupted'])} labels set to 0.01-0.14 ms): "
        f"the chosen model's test Spearman moved {rb['chosen_move']:.4f}; every corrupted "
        f"label named by the warning: {rb['all_corrupted_flagged']} "
        f"({len(rb['flagged'])} named in all).",
        "",
        f"Chosen: {rb['spearman']['clean']['chosen']} (clean labels), "
        f"{rb['spearman']['corrupted']['chosen']} (corrupted).",
        "",
        "| model | Spearman, clean | Spearman, corrupted | move |",
        "|---|---|---|---|",
    ]
    for model, move in rb["spearman_moves"].items():
        key = f"{model}_spearman"
        lines.append(
            f"| {model} | {rb['spearman']['clean'][key]:.3f} | "
            f"{rb['spearman']['corrupted'][key]:.3f} | {move:.4f} |"
        )
    return [*lines, ""]


def _few_shot_section(fs: dict[str, Any]) -> list[str]:
    lines = [
        f"## Few-shot: {fs['k']} labels on {fs['target']}, references {fs['references']}",
        "",
        "| picks | model | OOF Spearman | test Spearman | test ±10% | test MAPE % | "
        "more labels would help |",
        "|---|---|---|---|---|---|---|",
    ]
    for how in ("random", "farthest"):
        for model in ("transfer", "scratch"):
            s = fs[how][model]["all"]
            helps = fs[how]["curve"]["more_would_help"] if model == "transfer" else ""
            mark = " **(device fit)**" if fs[how]["device_fit_picks"] == model else ""
            lines.append(
                f"| {how} | {model}{mark} | {fs[how]['oof_spearman'][model]:.3f} | "
                f"{_fmt(s, 'spearman')} | {_fmt(s, 'within_10', True)} | {_fmt(s, 'mape')} | "
                f"{helps} |"
            )
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-graphs", type=int, default=600)
    p.add_argument("--runtimes", nargs="*", default=None, help="default: every available one")
    p.add_argument("--seconds-per-graph", type=float, default=0.25)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-sizes", type=int, nargs="*", default=[20, 100, 300])
    p.add_argument("--holdout-families", type=int, default=2)
    p.add_argument("--repeat-share", type=float, default=0.1)
    p.add_argument("--fresh", action="store_true", help="ignore cached labels, measure all")
    p.add_argument(
        "--unaligned-seen", action="store_true",
        help="two seen families at channel counts that fit no SIMD block (_cells.UNALIGNED_SEEN)",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    runtimes = available_runtimes()
    wanted = args.runtimes or list(runtimes)
    unknown = [r for r in wanted if r not in runtimes]
    if unknown:
        p.error(f"unknown runtimes {unknown}; available: {sorted(runtimes)}")
    runtimes = {r: runtimes[r] for r in wanted}
    t0 = time.perf_counter()
    families = UNALIGNED_SEEN if args.unaligned_seen else FAMILIES
    graphs = generate_graphs(args.n_graphs, seed=args.seed, families=families)
    print(f"{len(graphs)} graphs in {time.perf_counter() - t0:.1f} s; measuring on {wanted}")
    labels, host = measure_all(graphs, runtimes, seconds=args.seconds_per_graph,
                         cache_path=args.out / "labels.json", repeat_share=args.repeat_share,
                         seed=args.seed, fresh=args.fresh)  # fmt: skip
    args.nchwc_block = int((host or {}).get("nchwc_block") or host_info()["nchwc_block"])
    results = evaluate_all(graphs, labels, wanted, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


def evaluate_all(
    graphs: Sequence[CellGraph], labels: dict[str, Any], wanted: list[str], args: Any
) -> dict[str, Any]:
    """Fits, checks and few-shot results; each runtime on the graphs it could measure."""
    Y = {
        r: np.array([(labels[r][g.digest][0] or np.nan) for g in graphs], dtype=float)
        for r in wanted
    }
    t = time.perf_counter()
    X = oplevel_matrix([g.model_bytes for g in graphs], names=[g.name for g in graphs])
    features_s = (time.perf_counter() - t) / len(graphs)
    fam = np.array([g.family for g in graphs])
    names = [g.name for g in graphs]
    pool, sizes, test, held = split(graphs, args.holdout_families, args.train_sizes, args.seed)
    held_mask = np.isin(fam, list(held))
    cut = np.array([g.cut for g in graphs])
    subsets = {"held_families": held_mask, "no_cut": ~cut}
    results: dict[str, Any] = {
        "config": {**{k: str(v) for k, v in vars(args).items()}, "n_graphs": len(graphs),
                   "train_sizes": sizes, "n_test": len(test),
                   "n_test_held_families": int(held_mask[test].sum()),
                   "held_families": sorted(held), "n_cut": int(cut.sum())},
        "runtimes": {}, "few_shot": [],
    }  # fmt: skip
    ok = {r: np.isfinite(Y[r]) & (np.nan_to_num(Y[r]) > 0) for r in wanted}
    x86 = None
    if "ort-all" in wanted:
        from latency_models import graph_features

        # kernels as onnxruntime ran them on the CPU that took the labels (its NCHWc block)
        x86 = [graph_features(g.model_bytes, nchwc_block=args.nchwc_block) for g in graphs]
    for r in wanted:
        print(f"fitting {r}", flush=True)
        pool_r, test_r = pool[ok[r][pool]], test[ok[r][test]]
        sizes_r = [n for n in sizes if n <= len(pool_r)] or [len(pool_r)]
        results["runtimes"][r] = {
            "unmeasured": [names[i] for i in np.flatnonzero(~ok[r])],
            "unmeasured_cut": int((~ok[r] & cut).sum()),
            "repeat": repeat_agreement({g.digest: labels[r][g.digest] for g in graphs}),
            "fits": evaluate_runtime(
                X, Y[r], fam, pool_r, sizes_r, test_r, subsets, x86=x86 if r == "ort-all" else None
            ),
            "robustness": robustness_check(
                X, Y[r], fam, names, pool_r, sizes_r, test_r, args.seed
            ),
        }
    results["speed"] = prediction_speed(X, Y[wanted[0]], fam, pool, features_s, args)
    for target in wanted if len(wanted) >= 2 else []:  # each runtime new, the others known
        refs = {r: pool[ok[r][pool]][: max(sizes)] for r in wanted if r != target}
        pool_t, test_t = pool[ok[target][pool]], test[ok[target][test]]
        results["few_shot"].append(few_shot(X, Y, fam, refs, pool_t, test_t, subsets, target))
    return results


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


if __name__ == "__main__":
    main()
