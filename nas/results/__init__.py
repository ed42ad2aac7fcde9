"""Results of a run: the Pareto front, plots, the report and export.

The hypervolume of a front (:func:`hypervolume`) and of a run trial after trial
(:func:`hypervolume_history`) are public here; the rest is reached through ``nas``.
"""

from nas.results._hypervolume import (
    hypervolume,
    hypervolume_history,
    hypervolume_reference,
    normalised_losses,
)

__all__ = ["hypervolume", "hypervolume_history", "hypervolume_reference", "normalised_losses"]
