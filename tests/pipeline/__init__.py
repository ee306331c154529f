"""Tests of the library (``pipeline/``): data, features, models, strategies, the engine, backtests, state and
reports."""
