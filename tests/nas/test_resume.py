import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _search_home import profiled_home
from optuna.trial import TrialState

from nas import open_run
from nas.cli import main
from nas.searching._search import count_finished


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


def _states(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def test_sigkill_mid_run_then_resume(home: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [
        "search", "digits-resnet", "--device", "local-cpu", "--objectives", "accuracy,memory_mb",
        "--trials", "5", "--run", str(run_dir), "--seed", "0", "--recovery-steps", "60",
        "--no-warm-start", "--no-verify",
    ]  # fmt: skip
    code = "import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env={**os.environ, "HWNAS_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = run_dir / "study.db"
    deadline = time.monotonic() + 240
    try:
        while sum(s == "COMPLETE" for _, s in _states(db)) < 2:
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no two trials finished in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = open_run(run_dir)
    finished = {t.number: t.values for t in before.completed_trials()}
    left_running = [t.number for t in before.trials(states=(TrialState.RUNNING,))]
    assert 2 <= len(finished) < 5

    assert main(argv) == 0  # the same command resumes

    after = open_run(run_dir)
    # nothing finished is lost
    assert {n: after.frozen_trial(n).values for n in finished} == finished
    assert count_finished(after.study) == 5
    for number in left_running:
        trial = after.frozen_trial(number)
        assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"]
    assert len(after.trials()) == 5 + len(left_running)


def test_ctrl_c_records_what_finished_and_leaves_nothing_running(
    home: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    argv = [
        "search", "digits-resnet", "--device", "local-cpu", "--objectives", "accuracy,memory_mb",
        "--trials", "4", "--run", str(run_dir), "--recovery-steps", "400",
        "--no-warm-start", "--no-verify",
    ]  # fmt: skip
    code = "import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env={**os.environ, "HWNAS_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background (`cmd &` in a script) inherits an ignored
        # SIGINT, and Python then never raises KeyboardInterrupt: give the search the
        # default disposition, as a terminal's Ctrl-C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    db = run_dir / "study.db"
    deadline = time.monotonic() + 240
    while not any(s == "COMPLETE" for _, s in _states(db)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # into the next trial's training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "search interrupted" in err
    states = dict(_states(db))
    assert "RUNNING" not in states.values()
    assert "COMPLETE" in states.values()
    failed = open_run(run_dir).failed_trials()
    assert all(t.user_attrs["interrupted"] for t in failed)
