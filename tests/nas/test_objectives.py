"""One objective registry: a new objective is one registration, then searched and reported."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from _search_home import profiled_home

import nas
from nas import BudgetError
from nas._objectives import OBJECTIVES, Objective, register_objective
from nas.searching._budget import BUDGET_KEYS, COST_OBJECTIVES, parse_budget, parse_objectives


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


def weights_kb(graph_path: str) -> float:
    """Bytes of the graph's initializers, in kB (what a flash budget limits)."""
    from latency_models import memory_footprint

    return memory_footprint(graph_path).weight_bytes / 1e3


@pytest.fixture
def weights_objective() -> Iterator[Objective]:
    objective = register_objective(
        Objective("weights_kb", "minimize", "kB", "weights at their bit-widths",
                  source="computed", aliases=("flash",), compute=weights_kb)
    )  # fmt: skip
    try:
        yield objective
    finally:
        OBJECTIVES.remove("weights_kb")


def test_the_builtin_objectives_and_their_roles() -> None:
    assert list(OBJECTIVES) == ["accuracy", "latency_ms", "energy_mj", "memory_mb"]
    assert tuple(COST_OBJECTIVES) == ("latency_ms", "energy_mj", "memory_mb")
    assert set(BUDGET_KEYS) == {"latency_ms", "energy_mj", "memory_mb", "accuracy_drop"}
    assert parse_objectives("acc,latency,memory") == ("accuracy", "latency_ms", "memory_mb")
    assert (
        OBJECTIVES["latency_ms"].source == "measured"
        and OBJECTIVES["accuracy"].direction == "maximize"
    )


def test_registering_makes_an_objective_a_budget_key_everywhere(
    weights_objective: Objective,
) -> None:
    assert "weights_kb" in COST_OBJECTIVES and "weights_kb" in BUDGET_KEYS
    assert parse_objectives("accuracy,flash") == ("accuracy", "weights_kb")
    assert parse_budget("flash=40").to_dict() == {"weights_kb": 40.0}
    assert parse_budget("weights_kb=0.5x").relative == {"weights_kb": 0.5}
    with pytest.raises(ValueError, match="already registered"):
        register_objective(weights_objective)
    with pytest.raises(ValueError, match="give compute=FUNCTION"):
        Objective("params", "minimize", "k", "parameters")
    with pytest.raises(
        BudgetError, match=r"unknown objective 'weight_kb'.*Did you mean 'weights_kb'"
    ):
        parse_objectives("accuracy,weight_kb")


def test_a_registered_objective_is_searched_judged_and_named(
    home: Path, tmp_path: Path, weights_objective: Objective
) -> None:
    run = nas.search(
        "digits-resnet",
        device="local-cpu",
        objectives=("accuracy", "weights_kb"),
        budget="weights_kb=0.6x",
        n_trials=3,
        run_dir=tmp_path,
        seed=0,
        recovery_steps=2,
        warm_start=False,
        verify=False,
    )
    assert run.study.metric_names == ["accuracy [%]", "weights_kb (computed) [kB]"]
    limit = run.budget["weights_kb"]
    assert limit == pytest.approx(0.6 * run.base["weights_kb"])  # resolved on its computed value
    for trial in run.completed_trials():
        value = trial.user_attrs["predicted"]["weights_kb"]
        assert trial.values[1] == value > 0
        assert trial.constraints["weights_kb"] == pytest.approx(value / limit - 1)
    table = nas.pareto_table(run.path, include_all=True)
    assert "weights_kb" in table
