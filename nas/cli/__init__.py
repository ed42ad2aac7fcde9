"""The ``hwnas`` command line.

Each subcommand is one :class:`~nas.cli._base.BaseCommand` class; the modules listed in
``_COMMAND_MODULES`` each export ``COMMANDS``, a tuple of such classes. A wrong flag prints
the message and that subcommand's help, then exits 1; a hwnas error, or a file that cannot
be read or written, prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

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
    """Entry point of the ``hwnas`` console script.

    Errors print one line, ``hwnas: error: ...``, and return 1; only a wrong flag (an
    argparse error) also prints that subcommand's help. Warnings print one line each.
    """
    with warnings.catch_warnings():
        if warnings.showwarning is _PYTHON_SHOWWARNING:  # not when a test records them
            warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
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
        print(f"hwnas: error: {exc.args[0]}", file=sys.stderr)
        if len(exc.args) > 1:  # a wrong flag: show the command's usage
            print(file=sys.stderr)
            exc.args[1].print_help(sys.stderr)
        return 1
    except Exception as exc:
        if _is_hwnas_error(exc):
            print(f"hwnas: error: {exc}", file=sys.stderr)
        elif isinstance(exc, OSError):
            print(f"hwnas: error: {os_error_message(exc)}", file=sys.stderr)
        else:
            raise
        return 1
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"hwnas: warning: {message}", file=sys.stderr if file is None else file)


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: what failed, on which file, and the fix."""
    where = f" {str(exc.filename)!r}" if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"no space left on the disk writing{where}; free some space or write elsewhere."
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}:{where}; use a folder you may write to, or change its permissions."
    return f"{reason}:{where}" if where else str(exc)


# Errors are recognised by their modules' names, so that catching search_spaces' errors does
# not import search_spaces (and torch) for commands that never use it.
_ERROR_MODULES = frozenset({"nas._errors", "latency_models._errors", "search_spaces._errors"})


def _is_hwnas_error(exc: BaseException) -> bool:
    return any(cls.__module__ in _ERROR_MODULES for cls in type(exc).__mro__)


def _chosen_subcommand(args: argparse.Namespace) -> bool:
    return any(k.startswith("command_") and v for k, v in vars(args).items())


if __name__ == "__main__":
    sys.exit(main())
