"""Results of a run: the Pareto front, plots, the report and export."""
