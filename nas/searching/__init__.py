"""The search: settings, budgets, trials, measured costs, the Optuna study and its driver."""
