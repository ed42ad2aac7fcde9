"""The warm start seeds the search with informed configs and the uniform baselines."""

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from _search_home import profiled_home

from nas.searching._budget import Budget
from nas.searching._config import SearchConfig
from nas.searching._search import build_context
from nas.searching._warmstart import UNIFORM_MARGIN, enqueue_warm_start, params_of, uniform_configs


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


def test_uniform_baselines_within_the_limit_seed_the_search(home: Path, tmp_path: Path) -> None:
    from nas.searching._base import costs_of

    ctx = build_context(SearchConfig(task="digits-resnet", device="local-cpu"))
    base, _ = costs_of(ctx, ctx.space.identity(), tmp_path, "base")
    ctx.budget = Budget({"latency_ms": 0.9 * base["latency_ms"]})
    configs = uniform_configs(ctx)
    assert configs, "no uniform config predicted within 0.9x the base"
    limit = ctx.budget.limits["latency_ms"]
    for i, config in enumerate(configs):
        bits = set(config.bits.values())
        assert len(bits) == 1  # one precision everywhere: a uniform baseline
        costs, _ = costs_of(ctx, config, tmp_path, f"u{i}")
        assert costs["latency_ms"] <= UNIFORM_MARGIN * limit
    study = optuna.create_study(directions=["maximize", "minimize"])
    n = enqueue_warm_start(study, ctx)
    assert n >= len({tuple(sorted(params_of(ctx.space, c).items())) for c in configs})
    queued = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]
    for config in configs:
        assert params_of(ctx.space, config) in queued
    ctx.budget = Budget({"memory_mb": 1.0})  # no latency limit: nothing uniform to seed
    assert uniform_configs(ctx) == []
