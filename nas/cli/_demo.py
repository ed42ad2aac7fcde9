"""``hwnas demo``: profile, search, show the front and export, on a bundled task."""

from __future__ import annotations

import argparse

from nas.cli._base import BaseCommand


class DemoCommand(BaseCommand):
    """The whole loop on the bundled MNIST ResNet and this machine's CPU."""

    name = "demo"
    help = (
        "the whole loop on a bundled task: profile this CPU, search under a latency budget of "
        "a third of the base model's, show the front, export and measure the best trial"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags that shorten or lengthen the demo."""
        parser.add_argument("--task", default="mnist-resnet", help="task (default: mnist-resnet)")
        parser.add_argument("--device", default="local-cpu", help="device (default: local-cpu)")
        parser.add_argument("--trials", type=int, default=24, help="search trials (default 24)")
        parser.add_argument(
            "--recovery-steps", type=int, default=40, help="distillation steps per trial (40)"
        )
        parser.add_argument(
            "--profile-minutes",
            type=float,
            default=2.0,
            help="profiling budget when the device has no predictor yet (2)",
        )
        parser.add_argument(
            "--budget-fraction",
            type=float,
            default=1 / 3,
            help="latency budget as a fraction of the base model's (0.33)",
        )
        parser.add_argument(
            "--finetune-steps", type=int, default=200, help="fine-tune steps of the export (200)"
        )
        parser.add_argument("--workers", type=int, default=1, help="trials at once (1)")
        parser.add_argument("--run", default=None, help="run folder (default runs/demo-TIME)")
        parser.add_argument("--seed", type=int, default=0, help="seed (0)")
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a shorter demo: 12 trials, 20 recovery steps, 100 fine-tune steps",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Run the demo and print what it measured."""
        from nas.cli._demo_flow import run_demo

        if args.quick:
            args.trials, args.recovery_steps, args.finetune_steps = 12, 20, 100
        run_demo(
            task=args.task,
            device=args.device,
            trials=args.trials,
            recovery_steps=args.recovery_steps,
            profile_minutes=args.profile_minutes,
            budget_fraction=args.budget_fraction,
            finetune_steps=args.finetune_steps,
            workers=args.workers,
            run_dir=args.run,
            seed=args.seed,
            echo=lambda line: print(line, flush=True),
        )
        return 0


COMMANDS = (DemoCommand,)
