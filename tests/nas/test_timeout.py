import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _search_home import profiled_home

import nas
from nas.cli import main
from nas.searching._config import ConfigError, SearchConfig

SEARCH = ("digits-resnet", "--objectives", "accuracy,memory_mb", "--seed", "5")
FAST = ("--recovery-steps", "5", "--no-warm-start")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


@pytest.mark.parametrize(
    ("given", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), (45, 45)]
)
def test_timeout_forms(given: object, seconds: float) -> None:
    assert SearchConfig(task="t", timeout_s=given).timeout_s == seconds


def test_bad_timeout_is_refused_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"timeout_s: expected a duration such as '90s'.*'soon'"):
        SearchConfig(task="t", timeout_s="soon")
    with pytest.raises(ConfigError, match=r"got -1"):
        SearchConfig(task="t", timeout_s=-1)
    assert main(["search", *SEARCH, "--timeout", "2d", "--run", "unused"]) == 1
    err = capsys.readouterr().err
    assert "argument --timeout: expected a duration such as '90s', '30m', '2h'" in err
    assert "got '2d'" in err


def test_timeout_ends_the_search_early_finished_and_resumable(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = ["search", *SEARCH, *FAST, "--trials", "50", "--timeout", "2s", "--run", str(run_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stopped by --timeout (2 s) before 50 trials; the same command resumes it" in out
    assert json.loads((run_dir / "settings.json").read_text())["timeout_s"] == 2.0
    run = nas.open_run(run_dir)
    trials = run.trials()
    assert 1 <= len(trials) < 50
    assert {t.state.name for t in trials} == {"COMPLETE"}  # none left running or failed
    session = run.user_attrs["last_session"]
    assert session["timed_out"] and session["timeout_s"] == 2.0
    assert "verification" in run.user_attrs  # the post-search steps ran
    assert main(["pareto", str(run_dir), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)
    # resuming the same search, without a timeout, adds the trials asked for
    again = nas.search(
        "digits-resnet",
        device="local-cpu",
        objectives=("accuracy", "memory_mb"),
        n_trials=len(trials) + 1,
        run_dir=run_dir,
        seed=5,
        recovery_steps=5,
        warm_start=False,
    )
    assert len(again.trials()) == len(trials) + 1
    assert not again.user_attrs["last_session"]["timed_out"]
