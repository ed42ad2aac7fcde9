from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _task_fixtures import bundled_home

from nas.cli import main
from nas.tasks._train import num_threads


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from bundled_home(tmp_path_factory)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # one torch thread: on a shared, busy machine two threads per process oversubscribe
    with num_threads(1):
        yield


def test_tasks_lists_bundled_without_torch() -> None:
    code = (
        "import sys; from nas.cli import make_parser; "
        "args = make_parser().parse_args(['tasks']); rc = args._command.run(args); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("mnist-resnet", "mnist-mobilenetv2", "digits-resnet", "digits-mobilenetv2"):
        assert name in out.stdout
    assert "NO-TORCH" in out.stdout
    assert "file.py:function" in out.stdout


def test_tasks_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "digits-*"]) == 0
    out = capsys.readouterr().out
    assert "digits-resnet" in out and "mnist-resnet" not in out
    assert main(["tasks", "nothing-*"]) == 1
