"""The frame every ``hwnas`` subcommand fits into (modelled on ``optuna/cli.py``)."""

from __future__ import annotations

import argparse
from typing import ClassVar, NoReturn

from nas._errors import UsageError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors carry this (sub)command's help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self)


class BaseCommand:
    """One ``hwnas`` subcommand.

    Subclasses set ``name`` and ``help``, add their flags in :meth:`add_arguments` and do
    the work in :meth:`run`, importing heavy modules there, not at module level, so that
    ``hwnas --help`` stays fast. A command with ``subcommands`` dispatches to them instead.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    subcommands: ClassVar[tuple[type[BaseCommand], ...]] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's flags to ``parser``."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the exit status."""
        raise NotImplementedError


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: a whole number >= 0, with a message naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def build_parser(
    parser: argparse.ArgumentParser, commands: tuple[type[BaseCommand], ...], dest: str
) -> None:
    """Attach ``commands`` as subparsers of ``parser``; each sets ``args._command``."""
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", parser_class=_Parser)
    for command_cls in commands:
        command = command_cls()
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        child.set_defaults(_command=command, _parser=child)
        command.add_arguments(child)
        if command.subcommands:
            build_parser(child, command.subcommands, dest=f"{dest}_{command.name}")
