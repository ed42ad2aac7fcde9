"""The samplers a search can use, by name: ``tpe`` (default), ``nsga2``, ``gp``, ``random``.

Each entry of :data:`SAMPLERS` is a factory ``seed -> optuna.samplers.BaseSampler``. All of
them read the budget from ``trial.set_constraint`` (Optuna >= 5), so infeasible trials steer
the search without reaching the front. Add your own with::

    SAMPLERS.add("my-sampler", lambda seed: MySampler(seed=seed))

where ``MySampler`` subclasses ``optuna.samplers.BaseSampler`` (see its docstring for the
call order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from latency_models._registry import Registry

if TYPE_CHECKING:
    import optuna

SamplerFactory = Callable[[int | None], "optuna.samplers.BaseSampler"]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")
"""Sampler factories by name; each takes ``seed`` and returns a fresh sampler."""

DEFAULT_SAMPLER = "tpe"


@SAMPLERS.register("tpe")
def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    """Multivariate TPE; ``constant_liar`` keeps parallel workers from asking alike."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        constant_liar=True,
        n_startup_trials=10,
    )


@SAMPLERS.register("nsga2")
def _nsga2(seed: int | None) -> optuna.samplers.BaseSampler:
    """NSGA-II with a population of 20, suited to a few hundred trials."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


@SAMPLERS.register("gp")
def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    """Gaussian-process sampler (logEHVI); about a second per trial, best for short runs."""
    import optuna

    return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)


@SAMPLERS.register("random")
def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    """Uniform random sampling: the baseline every other sampler should beat."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """A new sampler ``name`` seeded with ``seed``.

    Raises:
        UnknownNameError: ``name`` is not registered (lists the registered names and the
            closest).
    """
    return SAMPLERS.get(name)(seed)


__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "SamplerFactory", "make_sampler"]
