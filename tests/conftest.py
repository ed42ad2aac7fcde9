"""Shared test set-up: the helper modules' folder, and the fast tier.

Two tiers run from the same files. The full suite (``python -m pytest -q -m "not slow"``,
what CI runs) takes about eight minutes on 2 cores. The fast tier (``-m "not slow and not
full"``) leaves out the tests listed in :data:`FULL_ONLY` — device profiles, the demo,
kill-and-resume, Ray clusters, the kernel predictors' fits, the agent's load test — and
still trains, exports and measures small models for real (the end-to-end test, the search,
export and measured-cost tests) in about three minutes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/nas holds helper modules (_task_fixtures, _search_home, ...) used across folders
sys.path.insert(0, str(Path(__file__).parent / "nas"))

FULL_ONLY: tuple[str, ...] = (
    "tests/nas/test_profile.py::test_profile_then_eval_then_resume",
    "tests/nas/test_profile.py::test_profile_with_task_measures_its_variants",
    "tests/nas/test_profile.py::test_profile_keeps_time_for_the_final_fit",
    "tests/nas/test_profile.py::test_initial_set_goes_on_until_a_fit_is_possible",
    "tests/nas/test_demo.py::test_demo_runs_the_whole_loop",
    "tests/nas/test_resume.py",
    "tests/nas/test_search.py::test_two_ray_workers_with_a_shared_storage",
    "tests/nas/test_search.py::test_budget_already_met_or_impossible",
    "tests/latency_models/test_measure.py::test_ray_device_runs_on_the_resource_node",
    "tests/latency_models/test_predictors.py::test_loads_without_torch_in_subprocess",
    "tests/latency_models/test_predictors.py::test_predictor_from_imported_jsonl_predicts_held_out",
    "tests/latency_models/test_predictors.py::test_contract[combined]",
    "tests/latency_models/test_predictors.py::test_contract[kernel]",
    "tests/latency_models/test_kernel_times.py::test_kernel_predictors_learn_from_kernel_times",
    "tests/latency_models/test_kernel_times.py::test_fit_predictor_picks_by_what_was_measured",
    "tests/latency_models/test_kernel_times.py::test_combined_chooses_its_kernel_weight_out_of_fold",
    "tests/latency_models/test_kernel_times.py::test_family_folds_keep_each_family_in_one_fold",
    "tests/latency_models/test_features.py::test_staged_networks_run_and_featurize_like_onnxruntime",
    "tests/latency_models/test_agent_hostile.py::test_load_200_requests_and_200_slow_connections",
    "tests/nas/test_report_browser.py",
    "tests/nas/test_ray_cluster.py",
    "tests/nas/test_timeout.py",
    "tests/nas/test_multifidelity.py::test_search_with_halving",
    "tests/nas/test_dataset_tasks.py::test_search_pareto_and_export_minimise_the_metric",
    "tests/nas/test_cli_device.py::test_import_fit_then_eval_prints_every_kind_beside_repeat_agreement",
    "tests/latency_models/test_fit_device.py::test_energy_goes_through_the_same_checks_and_choice",
)
"""Node-id prefixes of the tests only the full suite runs (the slowest, ~3 minutes)."""


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``HWNAS_HOME``, and the device registry as it was once the test is done."""
    from latency_models import DEVICES

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    saved = dict(DEVICES._entries)
    yield tmp_path / "home"
    DEVICES._entries.clear()
    DEVICES._entries.update(saved)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full: only in the full suite (see tests/conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        nodeid = item.nodeid
        if not nodeid.startswith("tests/"):  # run from another folder: make it rootdir-relative
            nodeid = str(Path(item.path).relative_to(root)) + nodeid[nodeid.find("::") :]
        if nodeid.startswith(FULL_ONLY):
            item.add_marker(pytest.mark.full)
