import multiprocessing
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas
from nas import RunError
from nas.searching._config import SearchConfig
from nas.searching._run import (
    STUDY_NAME,
    make_storage,
    open_run,
    read_run,
    run_lock,
    set_finished_trial_user_attr,
    storage_url,
)
from nas.searching._search import check_run_folder, count_finished, fail_interrupted_trials


def _make_run(tmp_path: Path, **settings: object) -> tuple[SearchConfig, optuna.Study]:
    config = SearchConfig(task="digits-resnet", run_dir=str(tmp_path), **settings)
    config.save(tmp_path)
    study = optuna.create_study(
        storage=make_storage(storage_url(tmp_path)),
        study_name=STUDY_NAME,
        directions=["maximize", "minimize"],
    )
    return config, study


def _add(study: optuna.Study, acc: float, lat: float, violation: float = -1.0) -> None:
    trial = study.ask()
    trial.suggest_int("w", 8, 64, step=8)
    trial.set_user_attr("predicted", {"latency_ms": lat, "energy_mj": 1.0, "memory_mb": 1.0})
    trial.set_constraint("latency_ms", violation)
    study.tell(trial, [acc, lat])


def test_pareto_trials_feasible_and_sorted(tmp_path: Path) -> None:
    _, study = _make_run(tmp_path, budget="latency_ms=2")
    _add(study, 90.0, 1.0)
    _add(study, 95.0, 1.8)
    _add(study, 89.0, 1.5)  # dominated
    _add(study, 99.0, 3.0, violation=0.5)  # infeasible
    run = open_run(tmp_path)
    assert [t.values for t in run.pareto_trials()] == [[90.0, 1.0], [95.0, 1.8]]
    assert len(run.pareto_trials(feasible_only=False)) == 3
    assert run.counts()["COMPLETE"] == 4
    assert "Pareto front: 2 feasible trials" in run.summary()
    assert run.frozen_trial(2).values == [89.0, 1.5]
    assert run.trial(2).values == {"accuracy": 89.0, "latency_ms": 1.5}
    with pytest.raises(RunError, match=r"no trial 9; trials: 0\.\.3"):
        run.frozen_trial(9)


def test_one_model_rows_agree_with_optunas_front(tmp_path: Path) -> None:
    _, study = _make_run(tmp_path, budget="latency_ms=2")
    _add(study, 90.0, 1.0)
    _add(study, 95.0, 1.8)
    _add(study, 89.0, 1.5)  # dominated
    _add(study, 99.0, 3.0, violation=0.5)  # infeasible
    run = open_run(tmp_path)
    assert [r.number for r in run.front()] == [t.number for t in run.pareto_trials()] == [0, 1]
    assert read_run(tmp_path).front() == run.front()  # read-only, the same rows
    assert not run.trial(3).budget_met and run.trial(3).constraints == {"latency_ms": 0.5}
    assert nas.RunResults is nas.Run


def test_measured_attr_on_finished_trial_visible_to_plain_optuna(tmp_path: Path) -> None:
    _, study = _make_run(tmp_path)
    _add(study, 90.0, 1.0)
    run = open_run(tmp_path)
    set_finished_trial_user_attr(run.study, run.frozen_trial(0), "measured", {"latency_ms": 1.1})
    set_finished_trial_user_attr(run.study, run.frozen_trial(0), "measured", {"latency_ms": 1.2})
    fresh = optuna.load_study(study_name=STUDY_NAME, storage=storage_url(tmp_path))
    assert fresh.trials[0].user_attrs["measured"] == {"latency_ms": 1.2}


def test_open_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        open_run(tmp_path / "nope")
    with pytest.raises(RunError, match="not a run folder"):
        open_run(tmp_path)
    SearchConfig(task="digits-resnet").save(tmp_path)
    with pytest.raises(RunError, match="holds no search yet"):
        _ = open_run(tmp_path).study


def test_run_folder_of_another_search_is_refused(tmp_path: Path) -> None:
    config, _ = _make_run(tmp_path, budget="latency_ms=2")
    check_run_folder(config.replace(n_trials=99, sampler="random"))  # fine: same search
    with pytest.raises(RunError, match=r"device: 'local-cpu' in the run vs 'other-cpu' now"):
        check_run_folder(config.replace(device="other-cpu"))
    with pytest.raises(RunError, match=r"objectives: .*'memory_mb'"):
        check_run_folder(config.replace(objectives=("accuracy", "memory_mb")))


def _hold_lock(
    path: str,
    ready: "multiprocessing.synchronize.Event",
    done: "multiprocessing.synchronize.Event",
) -> None:
    with run_lock(path):
        ready.set()
        done.wait(10)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(10)
        with (
            pytest.raises(RunError, match=rf"another hwnas search \(pid {holder.pid}\)"),
            run_lock(tmp_path),
        ):
            pass
    finally:
        done.set()
        holder.join()
    with run_lock(tmp_path):  # free again
        pass


def test_orphaned_running_trials_are_failed_and_not_counted(tmp_path: Path) -> None:
    config, study = _make_run(tmp_path)
    _add(study, 90.0, 1.0)
    failed = study.ask()
    failed.set_user_attr("error", "ValueError: boom")
    study.tell(failed, state=TrialState.FAIL)
    orphan = study.ask()  # left RUNNING, as by a killed process
    assert count_finished(study) == 2
    assert fail_interrupted_trials(study, tmp_path, config) == [orphan.number]
    trial = study.trials[orphan.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"]
    assert count_finished(study) == 2
