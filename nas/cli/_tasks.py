"""``hwnas tasks``: list the bundled tasks."""

from __future__ import annotations

import argparse

from nas.cli._base import BaseCommand


class TasksCommand(BaseCommand):
    """List the registered tasks with their descriptions; trains nothing."""

    name = "tasks"
    help = "list the bundled tasks (a task of your own is 'pkg.module:func' or 'file.py:func')"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add an optional wildcard filter."""
        parser.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'mnist-*'")

    def run(self, args: argparse.Namespace) -> int:
        """Print one line per task."""
        from nas.tasks._tasks import TASKS, list_tasks

        names = list_tasks(args.pattern)
        if not names:
            print(f"no task matches {args.pattern!r}; registered: {list_tasks()}")
            return 1
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {TASKS.get(name).description}")
        print(
            "\nA task of your own: 'package.module:function' or 'path/to/file.py:function' "
            "returning a nas.Task (see experiments/custom_task.py)."
        )
        return 0


COMMANDS = (TasksCommand,)
