"""``hwnas device profile`` and ``hwnas device eval``: fit and judge a device's predictors."""

from __future__ import annotations

import argparse
import json
import math

from nas._errors import UsageError
from nas.cli._base import BaseCommand


class DeviceProfileCommand(BaseCommand):
    """Measure a device and fit its latency (and energy) predictors."""

    name = "profile"
    help = (
        "Measure a generic kernel sweep (and compressed variants of --task's model) on the "
        "device, fit its predictors, then add samples where the held-out error is worst until "
        "the budget is spent. Measurements are stored: a stopped profile resumes."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, task, budget and seed flags."""
        parser.add_argument("name", metavar="NAME", help="device name (hwnas device list)")
        parser.add_argument("--task", help="task whose compressed variants to profile too")
        parser.add_argument(
            "--budget-minutes", type=float, default=10.0, help="wall-clock budget (default 10)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the graphs chosen")
        parser.add_argument(
            "--sweep",
            choices=("auto", "small", "wide"),
            default="auto",
            help="generic graphs to measure: small (up to 128 px), wide (ImageNet-size, up to "
            "224 px and 3 GMACs) or auto (wide when --task's input is >= 64 px; default)",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=1.0,
            help="cap of one graph's timed loop in s (default 1)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Profile, printing progress, then the held-out accuracy and where it was saved."""
        from nas.searching._profile import profile_device

        if args.budget_minutes <= 0:
            raise UsageError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
        result = profile_device(
            args.name,
            task=args.task,
            budget_minutes=args.budget_minutes,
            seed=args.seed,
            max_seconds_per_graph=args.max_seconds,
            sweep=args.sweep,
            progress=lambda line: print(line, flush=True),
        )
        print(
            f"profiled {result.device}: {result.n_graphs} graphs ({result.n_new} new), "
            f"{result.rounds} adaptive rounds, {result.elapsed_s / 60:.1f} min"
        )
        for target, path in result.paths.items():
            print(f"  {target} predictor saved to {path}")
        return 0


def _fmt(m: dict[str, float]) -> str:
    return (
        f"within 5% {100 * m['within_5']:5.1f}%  within 10% {100 * m['within_10']:5.1f}%  "
        f"MAPE {m['mape']:5.1f}%  RMSE {m['rmse']:.4g}  Spearman {m['spearman']:.3f}  "
        f"Kendall {m['kendall']:.3f}"
    )


class DeviceEvalCommand(BaseCommand):
    """Report the held-out accuracy of a device's predictor next to its noise floor."""

    name = "eval"
    help = (
        "Refit the device's predictor on part of its stored measurements and report, on the "
        "rest: share within 5%% and 10%%, MAPE, RMSE, Spearman and Kendall tau, beside a "
        "FLOPs-proportional baseline and the measurement noise floor; then every kind and "
        "both baselines (MACs, op-count) scored out of fold on held-out families, beside the "
        "labels' own repeat agreement."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, target, holdout and check flags."""
        parser.add_argument("name", metavar="NAME", help="device name")
        parser.add_argument(
            "--target", default="latency_ms", choices=("latency_ms", "energy_mj"), help="metric"
        )
        parser.add_argument("--holdout", type=float, default=0.25, help="held-out share")
        parser.add_argument(
            "--check",
            action="store_true",
            help="also measure the run-to-run noise floor (hwnas device check; ~1 min)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Evaluate and print."""
        from nas.searching._profile import evaluate_device

        if not 0 < args.holdout < 1:
            raise UsageError(f"--holdout must be in (0, 1), got {args.holdout}")
        report = evaluate_device(args.name, target=args.target, holdout=args.holdout)
        if args.check:
            from latency_models import check_device

            results = check_device(args.name, repeats=2)
            report["noise"]["run_to_run_spread_pct"] = {r.graph: r.spread_pct for r in results}
        if args.json:
            print(json.dumps(report, indent=2, default=str))
            return 0
        mix = report.get("kernel_weight")
        name = report["predictor"] + ("" if mix is None else f" (kernel weight {mix:g})")
        print(
            f"{args.name} {args.target}: {name} refit on {report['n_train']} "
            f"stored graphs, evaluated on {report['n_test']} held out"
        )
        print(f"  predictor  {_fmt(report['metrics'])}")
        print(f"  FLOPs      {_fmt(report['baseline'])}")
        rse = report["noise"]["median_rse_pct"]
        line = "  noise floor: "
        line += (
            f"median within-run error of a measurement {rse:.1f}%"
            if math.isfinite(rse)
            else ("within-run error unknown (imported measurements)")
        )
        spread = report["noise"].get("run_to_run_spread_pct")
        if spread:
            line += "; run-to-run spread " + ", ".join(f"{g} {s:.1f}%" for g, s in spread.items())
        else:
            line += f" (run `hwnas device check {args.name}` for the run-to-run spread)"
        print(line)
        _print_kinds(report)
        return 0


def _print_kinds(report: dict[str, object]) -> None:
    """Every kind's and both baselines' out-of-fold scores, then the labels' own agreement."""
    from latency_models.profiling._fit import score_table

    kinds = report.get("kinds")
    split = report.get("split") or {}
    if isinstance(kinds, dict) and kinds:
        held = "families" if isinstance(split, dict) and split.get("kind") == "group" else "graphs"
        print(f"  every kind out of fold ({report.get('feature_set')} device, {held} held out):")
        for row in score_table(kinds, mark=str(report["predictor"])):
            print(f"    {row}")
    rep = report.get("repeat") or {}
    if isinstance(rep, dict) and rep.get("n"):
        print(
            f"  labels' repeat agreement: within 10% {100 * float(rep['within_10']):.1f}% of "
            f"{rep['n']} graphs measured twice"
        )
    else:
        print("  labels' repeat agreement: n/a (no graph measured twice)")


DEVICE_SUBCOMMANDS: tuple[type[BaseCommand], ...] = (DeviceProfileCommand, DeviceEvalCommand)
