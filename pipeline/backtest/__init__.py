"""Backtests: one strategy or a portfolio of sleeves through the engine core, their metrics and storage, the
nightly and ad hoc runs, and the parity report that holds a runtime's day against a backtest of it."""
