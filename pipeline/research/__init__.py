"""Parameter research: search spaces from a strategy's parameter model, the compiled sweep that runs many
parameter sets through the engine kernel at once, Optuna studies, walk-forward optimisation and the measures of
overfitting (deflated Sharpe ratio, probability of backtest overfitting)."""
