"""``hwnas pareto``, ``hwnas report`` and ``hwnas export``: look at a run, take a model home."""

from __future__ import annotations

import argparse
import sys

from nas._errors import UsageError
from nas.cli._base import BaseCommand, non_negative_int


class ParetoCommand(BaseCommand):
    """Print a run's Pareto front; optionally plot it."""

    name = "pareto"
    help = (
        "Show the Pareto-optimal trials of a run (predicted and measured objectives, budget, "
        "compression). Reads the run without changing it, also while a search writes to it."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the run folder and the output options."""
        parser.add_argument("run", metavar="RUN", help="run folder, e.g. runs/NAME")
        parser.add_argument(
            "--all", action="store_true", help="include dominated trials and those over budget"
        )
        parser.add_argument(
            "--format", choices=("table", "csv", "json"), default="table", help="output format"
        )
        parser.add_argument(
            "--plot",
            metavar="FILE",
            help="also draw the front: FILE.html (one offline page: hover a point for its "
            "trial and costs, filter to the front or the budget, zoom), .svg or .png",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Read the run, print the table, write the plot."""
        from nas.results._pareto import format_rows, read_run

        if args.plot and not args.plot.lower().endswith((".html", ".svg", ".png")):
            raise UsageError(
                f"--plot {args.plot!r}: the file must end in .html, .svg or .png", args._parser
            )
        results = read_run(args.run)
        sys.stdout.write(format_rows(results, include_all=args.all, fmt=args.format))
        if args.plot:
            from nas.results._plots import plot_front

            path = plot_front(results, args.plot)
            print(f"wrote {path}", file=sys.stderr)
        return 0


class ReportCommand(BaseCommand):
    """Write the self-contained HTML report of a run."""

    name = "report"
    help = (
        "Write one self-contained HTML page (opens offline): settings, base model, an "
        "interactive front (hover, filter, zoom), per-layer policy of a trial, the latency "
        "predictor's error per trial, hypervolume over trials."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the run folder, the output file and the trial to detail."""
        parser.add_argument("run", metavar="RUN", help="run folder, e.g. runs/NAME")
        parser.add_argument("--out", required=True, metavar="FILE", help="output .html file")
        parser.add_argument(
            "--trial",
            type=non_negative_int,
            metavar="N",
            help="trial whose per-layer policy to show (default: the most accurate trial "
            "that meets the budget)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Read the run and write the report."""
        from nas.results._report import write_report

        path = write_report(args.run, args.out, trial=args.trial)
        print(f"wrote {path}")
        return 0


class ExportCommand(BaseCommand):
    """Export a trial as a verified ONNX + torch model with its report."""

    name = "export"
    help = (
        "Rebuild a trial's compressed model, fine-tune it with distillation, verify it and "
        "write model.onnx, model.pt and report.json into a new folder."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the run folder, the trial, the output folder and the fine-tune length."""
        parser.add_argument("run", metavar="RUN", help="run folder, e.g. runs/NAME")
        parser.add_argument(
            "--trial",
            type=non_negative_int,
            metavar="N",
            help="trial to export (default: the most accurate trial that meets the budget)",
        )
        parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
        parser.add_argument(
            "--force", action="store_true", help="replace the output folder if it exists"
        )
        parser.add_argument(
            "--finetune-steps",
            type=non_negative_int,
            default=None,
            metavar="K",
            help="distillation steps before export (default: the export's default)",
        )
        parser.add_argument(
            "--task",
            default=None,
            metavar="SPEC",
            help="the run's task (a bundled name, module:function or file.py:function); "
            "needed when the run names a task of its own",
        )
        parser.add_argument(
            "--trust-task",
            action="store_true",
            help="import and run the task the run folder names (only for folders you trust)",
        )
        parser.add_argument(
            "--runtime",
            default=None,
            help="also write and verify the runtime's own files (openvino, ncnn, mnn, tvm); "
            "default: the run's device runtime",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Export and print where the files went."""
        from nas.results._export import DEFAULT_FINETUNE_STEPS, export

        steps = DEFAULT_FINETUNE_STEPS if args.finetune_steps is None else args.finetune_steps
        result = export(
            args.run, args.trial, out_dir=args.out, finetune_steps=steps, force=args.force,
            task=args.task, trust_task=args.trust_task, runtime=args.runtime,
        )  # fmt: skip
        print(result.summary())
        return 0


COMMANDS: tuple[type[BaseCommand], ...] = (ParetoCommand, ReportCommand, ExportCommand)
