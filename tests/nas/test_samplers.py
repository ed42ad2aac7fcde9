import optuna
import pytest

from nas import UnknownNameError
from nas.searching._samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler


def test_registry_names() -> None:
    assert SAMPLERS.names() == ["gp", "nsga2", "random", "tpe"]
    assert DEFAULT_SAMPLER == "tpe"


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_each_sampler_runs_a_constrained_two_objective_study(name: str) -> None:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_int("x", 8, 64, step=8)
        bits = trial.suggest_categorical("bits", [8, 32])
        trial.set_constraint("latency_ms", x / 48 - 1)
        return float(x + bits), float(-x)

    def params(seed: int) -> list[dict]:
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=make_sampler(name, seed)
        )
        study.optimize(objective, n_trials=12 if name == "gp" else 14)
        return [t.params for t in study.trials]

    first = params(3)
    assert first == params(3)  # seeded: same trials
    assert all(set(p) == {"x", "bits"} for p in first)


def test_unknown_sampler_names_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown sampler 'nsga'.*Did you mean 'nsga2'"):
        make_sampler("nsga")
