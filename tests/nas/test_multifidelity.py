"""Successive halving of the recovery across a search's trials (nas/searching/_halving.py)."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from _search_home import profiled_home
from optuna.trial import TrialState

import nas
from nas._errors import RunError
from nas.cli import main
from nas.results._report import report_html
from nas.results._table import format_rows
from nas.searching._budget import Budget
from nas.searching._config import ConfigError, SearchConfig
from nas.searching._halving import SuccessiveHalving, count_pruned, rank_order, rung_steps
from nas.searching._search import build_context, count_finished
from nas.searching._trial import TrialContext, pack_state, recover_and_evaluate, unpack_state
from nas.tasks._recovery import RecoveryState
from nas.tasks._train import num_threads
from search_spaces import CompressionConfig


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"halving_eta": 1}, r"halving_eta must be 0 \(off\) or an integer >= 2, got 1"),
        (
            {"halving_eta": 3, "recovery_steps": 8},
            r"gives the first rung 8 // 3\*\*2 = 0 recovery steps; use recovery_steps >= 9",
        ),
        ({"halving_eta": 2, "halving_rungs": 1}, "halving_rungs must be an integer >= 2, got 1"),
    ],
)
def test_bad_halving_refused_before_the_search(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        nas.search("no-such-task", device="local-cpu", run_dir=tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_bad_halving_flag_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", "no-such-task", "--halving", "4", "--recovery-steps", "10"]
    assert main([*args, "--run", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "10 // 4**2 = 0 recovery steps" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_rung_steps_end_at_the_full_recovery() -> None:
    assert rung_steps(50, 3, 3) == (5, 16, 50)
    assert rung_steps(9, 3, 3) == (1, 3, 9)
    assert SearchConfig(task="t").halving_eta == 0  # off unless asked for


def test_rank_order_prefers_within_budget_then_the_front_then_its_ends() -> None:
    # (accuracy, latency_ms): 0 and 3 are the front's ends, 1 its middle, 2 is dominated
    # by 1, and 4 would be best but is over a cost limit
    values = [[90.0, 3.0], [85.0, 2.0], [80.0, 2.5], [70.0, 1.0], [99.0, 0.5]]
    violations = [0.0, 0.0, 0.0, 0.0, 0.2]
    order = rank_order(values, ["maximize", "minimize"], violations)
    assert order == [0, 3, 1, 2, 4]


class _Executor:
    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, key: int, payload: dict[str, Any]) -> None:
        self.submitted.append(payload)


def _rung_result(number: int, steps: int, accuracy: float) -> dict[str, Any]:
    return {
        "number": number,
        "steps": steps,
        "trained": steps,
        "state": b"weights",
        "values": [accuracy, 1.0],
        "constraints": {},
        "user_attrs": {
            "accuracy": accuracy,
            "predicted": {"latency_ms": 1.0, "energy_mj": 1.0, "memory_mb": 1.0},
            "timings_s": {"train": 1.0},
        },
    }


def test_asynchronous_promotion_uses_the_trials_that_reached_the_rung_so_far() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    ctx = TrialContext(  # only what the decisions read
        task=None, space=None, device=None, predictors={}, energy_source="estimated",
        objectives=("accuracy", "latency_ms"), budget=Budget({}),
        base_accuracy=95.0, recovery_steps=8, recovery_batch_size=8, recovery_lr=1e-3,
        reject_factor=1.5, calibration=None,
    )  # fmt: skip
    halving = SuccessiveHalving(study, ctx, eta=2, steps=(2, 8))
    executor = _Executor()
    trials = [study.ask() for _ in range(4)]
    for trial in trials:
        halving.first_payload({"number": trial.number, "config": {}})
    # equal costs: accuracy alone decides; the first of a rung goes on
    decisions = [
        halving.resolve(trials[n], _rung_result(n, 2, accuracy), executor)
        for n, accuracy in [(0, 50.0), (1, 40.0), (2, 60.0), (3, 55.0)]
    ]
    promoted = [p["number"] for p in executor.submitted]
    assert promoted == [0, 2, 3]  # 3 is second of four: the top half
    assert decisions[0] is None and decisions[2] is None and decisions[3] is None
    stopped = decisions[1]
    assert stopped["pruned"] and stopped["user_attrs"]["halving"] == {
        "rung": 0, "place": 2, "of": 2, "kept": 1
    }  # fmt: skip
    assert "accuracy" not in stopped["user_attrs"]
    assert executor.submitted[0] == {
        "number": 0, "config": {}, "steps": 8, "keep_state": False, "resume": b"weights"
    }  # fmt: skip
    final = halving.resolve(trials[0], _rung_result(0, 8, 70.0) | {"trained": 6}, executor)
    assert final["values"][0] == 70.0 and final["user_attrs"]["accuracy"] == 70.0
    rungs = final["user_attrs"]["rungs"]
    assert [(r["steps"], r["trained"]) for r in rungs] == [(2, 2), (8, 6)]


def test_continued_recovery_is_one_uninterrupted_recovery(home: Path, tmp_path: Path) -> None:
    ctx = build_context(
        SearchConfig(task="digits-resnet", recovery_steps=9, seed=0), with_predictors=False
    )
    config = ctx.space.uniform(width=0.5)  # channels pruned, fp32

    first = ctx.space.apply(ctx.task.model, config)
    state = RecoveryState()
    recover_and_evaluate(ctx, first, config, tmp_path, steps=3, timings={}, state=state)
    continued = ctx.space.apply(ctx.task.model, config)
    state = unpack_state(pack_state(first, state), continued)
    accuracy = recover_and_evaluate(ctx, continued, config, tmp_path, steps=6, timings={},
                                    state=state)  # fmt: skip
    assert state.steps_done == 9

    once = ctx.space.apply(ctx.task.model, config)
    assert recover_and_evaluate(ctx, once, config, tmp_path, steps=9, timings={}) == accuracy
    for name, tensor in once.state_dict().items():
        assert torch.equal(tensor, continued.state_dict()[name]), name


def test_search_with_halving(home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = dict(
        device="local-cpu",
        objectives=("accuracy", "latency_ms", "memory_mb"),
        n_trials=8,
        run_dir=tmp_path,
        seed=3,
        recovery_steps=8,
        halving_eta=2,
        halving_rungs=3,
        warm_start=False,
        verify=False,
    )
    logger = logging.getLogger("nas")  # its own handler does not reach caplog
    logger.addHandler(caplog.handler)
    try:
        run = nas.search("digits-resnet", **settings)
    finally:
        logger.removeHandler(caplog.handler)
    steps = [2, 4, 8]
    pruned = run.trials(states=(TrialState.PRUNED,))
    complete = [t for t in run.completed_trials() if not t.user_attrs["rejected_before_training"]]
    assert pruned and complete
    assert count_finished(run.study) + count_pruned(run.study) == 8  # what a resume counts
    for trial in pruned:  # stopped early: rung accuracies only, never on the front
        rungs = trial.user_attrs["rungs"]
        assert [r["steps"] for r in rungs] == steps[: len(rungs)] and len(rungs) < 3
        assert trial.values is None and "accuracy" not in trial.user_attrs
        where = trial.user_attrs["halving"]
        assert where["place"] > where["kept"] and "measured" not in trial.user_attrs
    for trial in complete:  # recovered in three rungs, continuing: 2 + 2 + 4 steps
        rungs = trial.user_attrs["rungs"]
        assert [r["steps"] for r in rungs] == steps
        assert sum(r["trained"] for r in rungs) == 8 == trial.user_attrs["recovery_steps"]
        assert trial.values[0] == trial.user_attrs["accuracy"] == rungs[-1]["accuracy"]
        assert trial.user_attrs["cost_source"] == "measured"
    front = {t.number for t in run.pareto_trials()}
    assert front and front <= {t.number for t in complete}
    assert not {t.number for t in pruned} & {r.number for r in run.rows}

    # the front's accuracy is the full recovery's: one recovery of 8 steps gives it
    best = max(complete, key=lambda t: t.user_attrs["accuracy"])
    ctx = build_context(run.settings, with_predictors=False)
    config = CompressionConfig.from_dict(best.user_attrs["config"])
    model = ctx.space.apply(ctx.task.model, config)
    with num_threads(1):  # as the search's trials ran
        again = recover_and_evaluate(ctx, model, config, tmp_path, steps=8, timings={})
    assert again == best.user_attrs["accuracy"]

    summary = run.user_attrs["halving"]
    assert summary["rung_steps"] == steps and summary["eta"] == 2
    assert summary["reached"][0] == len(pruned) + len(complete)
    assert summary["reached"][2] == len(complete)
    assert sum(summary["stopped"]) == len(pruned)
    assert [(a["short_steps"], a["long_steps"]) for a in summary["rank_agreement"]] == [
        (2, 4),
        (4, 8),
    ]
    assert summary["recovery_steps_spent"] < summary["recovery_steps_without_halving"]
    assert "successive halving (eta 2)" in caplog.text and "Kendall tau" in caplog.text

    # a stopped trial cannot be exported or shown as chosen, and says why
    first_pruned = pruned[0]
    stopped_at = first_pruned.user_attrs["rungs"][-1]["steps"]
    with pytest.raises(
        RunError,
        match=rf"trial {first_pruned.number} .* was stopped by "
        rf"successive halving after {stopped_at} recovery steps",
    ):
        run.trial(first_pruned.number)
    stopped = f"{len(pruned)} stopped early"
    assert stopped in run.summary()
    assert f"{stopped} by successive halving" in format_rows(nas.read_run(tmp_path))
    page = report_html(nas.read_run(tmp_path))
    assert "<h2>Multi-fidelity recovery</h2>" in page
    assert f"{len(pruned)} trials stopped early" in page and "rungs of 2/4/8" in page
