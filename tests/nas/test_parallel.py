import operator

import pytest

from nas.searching._parallel import RayExecutor, SerialExecutor, make_executor


def _square(context: int, payload: int) -> int:
    if payload < 0:
        raise ValueError(f"negative {payload}")
    return context * payload * payload


def test_serial_executor_runs_in_order_and_returns_errors() -> None:
    executor = make_executor(_square, 2, workers=1)
    assert isinstance(executor, SerialExecutor)
    executor.submit("a", 3)
    executor.submit("b", -1)
    assert executor.pending == 2
    assert executor.wait_one() == ("a", 18)
    key, error = executor.wait_one()
    assert key == "b" and isinstance(error, ValueError)
    executor.submit("c", 1)
    assert executor.cancel_all() == ["c"]


@pytest.mark.slow
def test_ray_executor_two_workers() -> None:
    # Ray workers import the function by module: use one they can import.
    executor = make_executor(operator.truediv, 12.0, workers=2)
    assert isinstance(executor, RayExecutor)
    try:
        for i in (1, 2, 3, 4):
            executor.submit(i, i)
        executor.submit("bad", 0)
        results = dict(executor.wait_one() for _ in range(5))
    finally:
        executor.shutdown()
    assert {k: v for k, v in results.items() if k != "bad"} == {1: 12, 2: 6, 3: 4, 4: 3}
    assert isinstance(results["bad"], Exception) and "division by zero" in str(results["bad"])
