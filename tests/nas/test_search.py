from collections.abc import Iterator
from pathlib import Path

import pytest
from _search_home import profiled_home
from optuna.trial import TrialState

import nas
from nas import BudgetError, RunError
from nas.cli import main
from nas.searching._search import count_finished
from nas.searching._trial import FAIL_TRIALS_ENV


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objectives": "accuracy,latncy"}, r"unknown objective 'latncy'.*Did you mean 'latency'"),
        ({"objectives": "accuracy"}, "at least two objectives"),
        ({"budget": "latency_ms=1,memroy_mb=2"}, r"unknown budget key 'memroy_mb'.*'memory_mb'"),
    ],
)
def test_bad_input_refused_before_any_work(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        nas.search("no-such-task", device="local-cpu", run_dir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_budget_already_met_or_impossible(home: Path, tmp_path: Path) -> None:
    # memory is computed exactly: base 0.09 MB, the cheapest config 0.01 MB
    with pytest.raises(BudgetError, match="uncompressed model already meets the budget"):
        nas.search("digits-resnet", device="local-cpu", budget="memory_mb=5", run_dir=tmp_path)
    with pytest.raises(BudgetError, match=r"no config in the search space can meet.*memory_mb"):
        nas.search("digits-resnet", device="local-cpu", budget="memory_mb=0.001", run_dir=tmp_path)
    assert not (tmp_path / "study.db").exists()


def test_failing_trial_is_recorded_and_search_completes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_TRIALS_ENV, "1")
    run = nas.search(
        "digits-resnet",
        device="local-cpu",
        objectives=("accuracy", "memory_mb"),
        budget="memory_mb=0.03",  # above 0.045 MB: rejected without training
        n_trials=4,
        run_dir=tmp_path,
        seed=1,
        recovery_steps=5,
        warm_start=False,
        verify=False,
    )
    failed = run.failed_trials()
    assert [t.number for t in failed] == [1]
    assert "fails on purpose" in failed[0].user_attrs["error"]
    assert count_finished(run.study) == 4
    done = run.completed_trials()
    assert len(done) == 3
    for trial in done:
        attrs = trial.user_attrs
        assert set(attrs["predicted"]) == {"latency_ms", "energy_mj", "memory_mb"}
        assert attrs["energy_source"] == "estimated"
        assert {"apply", "export", "predict", "total"} <= set(attrs["timings_s"])
        if attrs["rejected_before_training"]:
            assert attrs["accuracy"] is None and trial.values[0] == 0.0
            assert attrs["predicted"]["memory_mb"] > 1.5 * 0.03
            assert not run.is_feasible(trial)
        else:
            assert 0 <= attrs["accuracy"] <= 100 and "train" in attrs["timings_s"]
    # the same command on the same folder resumes: nothing left to do
    again = nas.search(
        "digits-resnet",
        device="local-cpu",
        objectives=("accuracy", "memory_mb"),
        budget="memory_mb=0.03",
        n_trials=4,
        run_dir=tmp_path,
        recovery_steps=5,
        warm_start=False,
        verify=False,
    )
    assert len(again.trials()) == 4
    with pytest.raises(RunError, match=r"different search \(budget: "):
        nas.search(
            "digits-resnet",
            device="local-cpu",
            objectives=("accuracy", "memory_mb"),
            budget="memory_mb=0.04",
            n_trials=4,
            run_dir=tmp_path,
        )


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["search", "--run", str(tmp_path)]) == 1
    assert "give a TASK" in capsys.readouterr().err
    assert main(["search", "digits-resnet", "--trials", "0"]) == 1
    assert "expected a number >= 1" in capsys.readouterr().err
    assert main(["search", "digits-resnet", "--sampler", "tpee", "--run", str(tmp_path)]) == 1
    assert "Did you mean 'tpe'" in capsys.readouterr().err


def test_two_ray_workers_with_a_shared_storage(home: Path, tmp_path: Path) -> None:
    # a storage outside the run folder is treated as shared: heartbeats, no folder-lock cleanup
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    run = nas.search(
        "digits-resnet",
        storage=shared,
        device="local-cpu",
        objectives=("accuracy", "latency_ms", "memory_mb"),
        n_trials=4,
        workers=2,
        run_dir=tmp_path / "run",
        seed=2,
        recovery_steps=5,
        warm_start=False,
        verify=False,
    )
    assert len(run.trials(states=(TrialState.COMPLETE,))) == 4
    assert run.user_attrs["last_session"]["workers"] == 2
    assert run.pareto_trials()
    assert not (run.path / "study.db").exists() and run.storage_url == shared
