"""``hwnas agent``: serve measurements of ONNX graphs on this device over HTTP."""

from __future__ import annotations

import argparse

from nas.cli._base import BaseCommand


class AgentCommand(BaseCommand):
    """Run the measurement agent."""

    name = "agent"
    help = (
        "Serve measurements of ONNX graphs sent over HTTP (run it on the target device; "
        "`python -m latency_models.agent` does the same with only numpy and onnxruntime "
        "installed). Prints the token clients must send."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add host, port, token and limits."""
        from latency_models.agent import add_arguments

        add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        """Serve until interrupted."""
        from latency_models.agent import run_from_args

        return run_from_args(args)


COMMANDS = (AgentCommand,)
