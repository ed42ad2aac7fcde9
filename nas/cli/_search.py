"""``hwnas search``: run (or resume) a compression search into a run folder."""

from __future__ import annotations

import argparse
from typing import Any

from nas.cli._base import BaseCommand, non_negative_int


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _duration(text: str) -> float:
    from nas.searching._config import parse_duration_s

    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_problem_arguments(parser: argparse.ArgumentParser) -> None:
    """What is searched: the task, the device, the objectives, the budget and the costs."""
    parser.add_argument(
        "task",
        nargs="?",
        help="bundled task name (see `hwnas tasks`), 'pkg.module:func' or 'file.py:func'; "
        "may come from --config instead",
    )
    parser.add_argument(
        "--device", help="device name (see `hwnas device list`; default local-cpu)"
    )
    parser.add_argument(
        "--objectives",
        help="two or more of accuracy,latency_ms,energy_mj,memory_mb "
        "(default accuracy,latency_ms)",
    )
    parser.add_argument(
        "--budget",
        help="limits, e.g. latency_ms=1.5,memory_mb=2,accuracy_drop=1 "
        "(ms, MB, mJ; accuracy_drop in units of the task's metric: top-1 points by "
        "default); latency_ms=0.5x is half the base "
        "model's latency measured on the device at the start",
    )
    parser.add_argument(
        "--costs",
        choices=("auto", "measured", "predicted"),
        help="where trial latency comes from: measured on the device for every trained "
        "candidate (measured), predictions only (predicted), or measured wherever the "
        "device answers (auto, the default)",
    )
    parser.add_argument(
        "--refit-every",
        type=non_negative_int,
        metavar="K",
        help="recalibrate the latency predictor on the search's measured candidates every "
        "K measurements (default 5; 0: never)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How the trials run: how many, how many at once, for how long, where, how sampled."""
    parser.add_argument("--trials", type=_positive_int, help="trials in the run (default 50)")
    parser.add_argument(
        "--workers", type=_positive_int, help="trials at once; >1 runs Ray tasks (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="start no trial after this much searching (90s, 30m, 2h or seconds); running "
        "trials finish and the front is verified as usual; re-run to resume",
    )
    parser.add_argument("--run", help="run folder, e.g. runs/NAME (re-run to resume)")
    parser.add_argument("--sampler", help="tpe (default), nsga2, gp or random")
    parser.add_argument("--seed", type=non_negative_int, help="seed for reproducible runs")
    parser.add_argument("--config", help="TOML or YAML settings file (flags override it)")
    parser.add_argument("--ray-address", help="Ray cluster address (default: a local Ray)")


def _add_recovery_arguments(parser: argparse.ArgumentParser) -> None:
    """How each candidate's accuracy is recovered: its steps and their successive halving."""
    parser.add_argument(
        "--recovery-steps", type=non_negative_int, help="distillation steps per candidate"
    )
    parser.add_argument(
        "--halving",
        type=non_negative_int,
        metavar="ETA",
        help="successive halving of the recovery: every candidate gets a short recovery "
        "first and only the top 1/ETA of each rung gets more, from its own weights; the "
        "rest are recorded as pruned (ETA >= 2; default 0: off)",
    )
    parser.add_argument(
        "--halving-rungs",
        type=non_negative_int,
        metavar="K",
        help="rungs of --halving, the k-th from the last at recovery_steps // ETA**k "
        "steps (default 3)",
    )


def _add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The storage, and what runs around the trials: warm start, verify, fidelity, progress."""
    parser.add_argument("--storage", help="Optuna storage URL (default: RUN/study.db)")
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_const",
        const=False,
        help="skip the per-layer sensitivity scan that seeds the search",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_const",
        const=False,
        help="do not measure the final front on the device",
    )
    parser.add_argument(
        "--fidelity",
        type=non_negative_int,
        metavar="N",
        help="after the search, re-train N trials longer and report Kendall's tau",
    )
    parser.add_argument("--progress", action="store_const", const=True, help="show a progress bar")


class SearchCommand(BaseCommand):
    """Search a task's compression space for the Pareto front on a device."""

    name = "search"
    help = "search compressed versions of a task's model for a device (resumable)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the search flags; each overrides the --config file, which overrides defaults."""
        _add_problem_arguments(parser)
        _add_run_arguments(parser)
        _add_recovery_arguments(parser)
        _add_stage_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        """Resolve the settings (defaults < --config < flags), search, print the front."""
        from nas._errors import UsageError
        from nas.searching._config import SearchConfig
        from nas.searching._search import run_search

        flags: dict[str, Any] = {
            "task": args.task,
            "device": args.device,
            "objectives": args.objectives,
            "budget": args.budget,
            "n_trials": args.trials,
            "workers": args.workers,
            "run_dir": args.run,
            "sampler": args.sampler,
            "seed": args.seed,
            "ray_address": args.ray_address,
            "recovery_steps": args.recovery_steps,
            "halving_eta": args.halving,
            "halving_rungs": args.halving_rungs,
            "storage": args.storage,
            "warm_start": args.warm_start,
            "verify": args.verify,
            "fidelity_trials": args.fidelity,
            "show_progress_bar": args.progress,
            "costs": args.costs,
            "refit_every": args.refit_every,
            "timeout_s": args.timeout,
        }
        if args.task is None and args.config is None:
            raise UsageError(
                "give a TASK (e.g. digits-resnet) or a --config file naming one", args._parser
            )
        config = SearchConfig.resolve(file=args.config, **flags)
        if not config.run_dir:
            raise UsageError("give a run folder: --run runs/NAME", args._parser)
        run = run_search(config)
        print(run.summary())
        if (run.user_attrs.get("last_session") or {}).get("timed_out"):
            print(
                f"stopped by --timeout ({config.timeout_s:g} s) before {config.n_trials} "
                "trials; the same command resumes it"
            )
        front = run.pareto_trials()
        if front:
            sources = {"latency_ms": "meas", "energy_mj": "meas/est", "memory_mb": "computed"}
            if config.costs == "predicted":
                sources.update(latency_ms="pred", energy_mj="pred/est")
            heads = [f"{n} ({sources[n]})" if n in sources else n for n in run.objectives]
            print(f"\n{'trial':>5}  " + "  ".join(f"{h:>11}" for h in heads) + "  summary")
            for trial in front:
                values = "  ".join(f"{v:>11.4g}" for v in trial.values)
                print(f"{trial.number:>5}  {values}  {trial.user_attrs.get('summary', '')}")
        elif run.budget:
            print(
                "\nNo trial meets the budget yet: run more trials (the same command with a "
                "larger --trials resumes), more --recovery-steps, or loosen the budget."
            )
        print(f"\nInspect it: hwnas pareto {run.path}")
        return 0


COMMANDS = (SearchCommand,)
