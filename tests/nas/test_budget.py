import pytest

from nas import BudgetError
from nas.searching._budget import BUDGET_KEYS, Budget, directions, parse_budget, parse_objectives


def test_parse_objectives_canonical_and_aliases() -> None:
    assert parse_objectives("accuracy,latency,memory") == ("accuracy", "latency_ms", "memory_mb")
    assert parse_objectives(["accuracy", "energy_mj", "accuracy"]) == ("accuracy", "energy_mj")
    assert directions(("accuracy", "latency_ms")) == ["maximize", "minimize"]


def test_unknown_objective_lists_valid_and_closest() -> None:
    with pytest.raises(BudgetError, match=r"objective 'latncy_ms'.*mean 'latency_ms'"):
        parse_objectives("accuracy,latncy_ms")


def test_fewer_than_two_objectives() -> None:
    with pytest.raises(BudgetError, match="at least two objectives"):
        parse_objectives("accuracy")
    with pytest.raises(BudgetError, match="at least two objectives"):
        parse_objectives("latency_ms,latency")


def test_parse_budget_string() -> None:
    budget = parse_budget("latency_ms=1.5,memory_mb=2,accuracy_drop=1")
    assert budget.to_dict() == {"latency_ms": 1.5, "memory_mb": 2.0, "accuracy_drop": 1.0}
    assert budget.cost_limits == {"latency_ms": 1.5, "memory_mb": 2.0}
    assert str(budget) == "latency_ms=1.5,memory_mb=2,accuracy_drop=1"
    assert not parse_budget(None) and not parse_budget("")
    assert parse_budget({"latency": 2}).to_dict() == {"latency_ms": 2.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("latency=1,latency_ms=2", "given twice"),
        ("latency_ms", "not KEY=VALUE"),
        ("latency_ms=fast", "must be a number"),
        ("latency_ms=-1", "must be finite and > 0"),
        ("memory_mb=0", "must be finite and > 0"),
        ("accuracy_drop=nan", "must be finite"),
    ],
)
def test_bad_budget_values(spec: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        parse_budget(spec)


def test_unknown_budget_key_lists_valid_and_closest() -> None:
    with pytest.raises(BudgetError) as info:
        parse_budget("latency_ms=1,memroy_mb=2")
    text = str(info.value)
    assert "'memroy_mb'" in text and "Did you mean 'memory_mb'" in text
    for key in BUDGET_KEYS:
        assert key in text


def test_violations_and_far_outside() -> None:
    budget = Budget({"latency_ms": 2.0, "accuracy_drop": 1.0})
    ok = budget.violations({"accuracy": 94.5, "latency_ms": 1.0}, base_accuracy=95.0)
    assert ok["latency_ms"] == pytest.approx(-0.5) and ok["accuracy_drop"] == pytest.approx(-0.5)
    bad = budget.violations({"accuracy": None, "latency_ms": 4.0}, base_accuracy=95.0)
    assert bad["latency_ms"] == pytest.approx(1.0) and bad["accuracy_drop"] > 0
    assert budget.far_outside({"latency_ms": 3.1}) == ["latency_ms"]
    assert budget.far_outside({"latency_ms": 2.9}) == []
    assert budget.unmet({"latency_ms": 2.1}) == ["latency_ms"]
    with pytest.raises(BudgetError, match="base model's accuracy"):
        budget.violations({"accuracy": 90.0, "latency_ms": 1.0})
