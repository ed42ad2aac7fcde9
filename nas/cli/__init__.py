"""The ``hwnas`` command line.

Each subcommand is one :class:`~nas.cli._base.BaseCommand` class; the modules listed in
``_COMMAND_MODULES`` each export ``COMMANDS``, a tuple of such classes. A usage error prints
the message and that subcommand's help, then exits 1; a hwnas error prints its message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nas._errors import UsageError
from nas.cli._base import BaseCommand, _Parser, build_parser

# Modules with commands; each keeps its heavy imports inside ``run``.
_COMMAND_MODULES = (
    "nas.cli._tasks",
    "nas.cli._demo",
    "nas.cli._device",
    "nas.cli._agent",
    "nas.cli._search",
    "nas.cli._pareto",
)


def _commands() -> tuple[type[BaseCommand], ...]:
    found: list[type[BaseCommand]] = []
    for module_name in _COMMAND_MODULES:
        found.extend(importlib.import_module(module_name).COMMANDS)
    return tuple(found)


def make_parser() -> argparse.ArgumentParser:
    """The full ``hwnas`` argument parser."""
    from nas import __version__

    parser = _Parser(
        prog="hwnas",
        description="Hardware-aware compression search: find the Pareto-optimal compressed "
        "versions of a PyTorch model for your device, measured there.",
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.set_defaults(_parser=parser)
    build_parser(parser, _commands(), dest="command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwnas`` console script."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        command: BaseCommand | None = getattr(args, "_command", None)
        if command is None or (command.subcommands and not _chosen_subcommand(args)):
            args._parser.print_help()
            return 1
        if args.verbose or args.quiet:
            from nas import logging as nas_logging

            nas_logging.set_verbosity(nas_logging.DEBUG if args.verbose else nas_logging.WARNING)
        return command.run(args)
    except UsageError as exc:
        message = exc.args[0]
        sub_parser = exc.args[1] if len(exc.args) > 1 else getattr(args, "_parser", parser)
        print(f"hwnas: error: {message}\n", file=sys.stderr)
        sub_parser.print_help(sys.stderr)
        return 1
    except Exception as exc:
        if not _is_hwnas_error(exc):
            raise
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130


# Errors are recognised by their modules' names, so that catching search_spaces' errors does
# not import search_spaces (and torch) for commands that never use it.
_ERROR_MODULES = frozenset({"nas._errors", "latency_models._errors", "search_spaces._errors"})


def _is_hwnas_error(exc: BaseException) -> bool:
    return any(cls.__module__ in _ERROR_MODULES for cls in type(exc).__mro__)


def _chosen_subcommand(args: argparse.Namespace) -> bool:
    return any(k.startswith("command_") and v for k, v in vars(args).items())


if __name__ == "__main__":
    sys.exit(main())
