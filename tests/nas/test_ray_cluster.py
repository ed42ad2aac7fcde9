"""A search on a real two-node Ray cluster (``ray.cluster_utils.Cluster``, one CPU per node).

The head node runs the driver; the second node holds the device's custom resource
(``bench``), so a measurement that ran anywhere but there would show. The last test removes
that node while a trial runs on it. About 45 s on 2 cores, most of it Ray starting nodes and
workers.
"""

import functools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _search_home import profiled_home
from optuna.trial import TrialState

import nas
from nas.searching import _driver
from nas.searching._trial import evaluate_trial

ray = pytest.importorskip("ray")

DEVICE = "ray-bench-test"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster(home: Path) -> Iterator[dict[str, Any]]:
    """Head (1 CPU, the driver's node) and a bench node (1 CPU, ``{"bench": 1}``)."""
    from ray.cluster_utils import Cluster

    from latency_models import device_predictor, predictor_path

    # the Ray device screens with local-cpu's predictor: a profile would take minutes
    device_predictor("local-cpu").save(predictor_path(DEVICE), device=DEVICE)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        bench = cluster.add_node(num_cpus=1, resources={"bench": 1})
        cluster.wait_for_nodes()
        cluster.connect()  # the driver joins the head node: trials and measurements share it
        yield {
            "cluster": cluster,
            "head": cluster.head_node.node_id,
            "bench": bench.node_id,
            "bench_node": bench,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_trials_on_both_nodes_measured_on_the_bench_node_until_the_timeout(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    from latency_models import DeviceSpec

    # both workers start a trial at once, one per node; the timeout runs out while they
    # start up, so no third trial starts and the two running ones finish and are measured
    run = nas.search(
        "digits-resnet",
        device=DeviceSpec(DEVICE, location="ray:bench"),
        ray_address=cluster["cluster"].address,
        workers=2,
        n_trials=50,
        timeout_s=1,
        run_dir=tmp_path / "run",
        seed=3,
        recovery_steps=5,
        warm_start=False,
        verify=False,
    )
    done = run.trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["node"] for t in done} == {cluster["head"], cluster["bench"]}
    assert [t.user_attrs["cost_source"] for t in done] == ["measured"] * 2
    assert {t.user_attrs["measured_node"] for t in done} == {cluster["bench"]}
    session = run.user_attrs["last_session"]
    assert session["timed_out"] and session["workers"] == 2


def _hang_on(node: str, marker: str, ctx: Any, payload: Any) -> Any:
    """The trial function, except that on ``node`` it says so in ``marker`` and hangs."""
    if ray.get_runtime_context().get_node_id() == node:
        Path(marker).write_text(str(payload["number"]))
        time.sleep(300)
    return evaluate_trial(ctx, payload)


def test_a_node_lost_mid_trial_fails_that_trial_and_the_search_goes_on(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # runs last: it removes the bench node (the search's device here is this machine)
    marker = tmp_path / "hung"
    monkeypatch.setattr(
        _driver, "evaluate_trial", functools.partial(_hang_on, cluster["bench"], str(marker))
    )
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/nas

    def remove_the_node_once_it_hangs() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster["cluster"].remove_node(cluster["bench_node"])

    killer = threading.Thread(target=remove_the_node_once_it_hangs, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        run = nas.search(
            "digits-resnet",
            device="local-cpu",
            objectives=("accuracy", "memory_mb"),
            costs="predicted",
            ray_address=cluster["cluster"].address,
            workers=2,
            n_trials=4,
            run_dir=tmp_path / "run",
            seed=4,
            recovery_steps=5,
            warm_start=False,
            verify=False,
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        killer.join(timeout=60)
    assert marker.exists() and time.monotonic() - started < 120
    failed = run.failed_trials()
    assert [t.number for t in failed] == [int(marker.read_text())]
    assert "WorkerLostError: the Ray worker running it was lost" in failed[0].user_attrs["error"]
    done = run.trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3 and {t.user_attrs["node"] for t in done} == {cluster["head"]}
