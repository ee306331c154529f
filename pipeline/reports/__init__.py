"""Read-only report queries: what the dashboard (and the daily summary) show, computed in one place.

* :mod:`pipeline.reports.trading` — the runtime's state: overview, equity, commands, trades;
* :mod:`pipeline.reports.market` — the lake: catalogue, chart data (down-sampled), data health, quarantine;
* :mod:`pipeline.reports.backtests` — stored backtest runs, their curves and breaker events;
* :mod:`pipeline.reports.models` — registered models, promotion and rollback, the model's probability;
* :mod:`pipeline.reports.summary` — the daily summary of every sleeve (read by the summary flow, not re-exported);
* :mod:`pipeline.reports.flow_runs` — the flow runs that failed, as the Overview shows them and Telegram announces
  them (not re-exported);
* :mod:`pipeline.reports.traded` — the series the runtime trades, and the series a chart opens on (not
  re-exported).
"""

from pipeline.reports.backtests import backtest_root, breaker_events, curves, runs
from pipeline.reports.market import (
    ChartData,
    catalog,
    chart_data,
    chart_timeframes,
    data_health,
    display_timeframe,
    quarantine_reasons,
    quarantine_rows,
    series_span,
)
from pipeline.reports.models import (
    chart_probability,
    hybrid_model_name,
    load_production,
    model_versions,
    production_versions,
    promote,
    rollback,
)
from pipeline.reports.trading import (
    OUTCOMES,
    Overview,
    SleeveStatus,
    TradeSelection,
    commands,
    equity_curve,
    overview,
    sleeves,
    trades,
    trades_csv,
    working_orders,
)

__all__ = [
    "OUTCOMES", "ChartData", "Overview", "SleeveStatus", "TradeSelection", "backtest_root", "breaker_events", "catalog",
    "chart_data", "chart_probability", "chart_timeframes", "commands", "curves", "data_health",
    "display_timeframe", "equity_curve", "hybrid_model_name", "load_production", "model_versions", "overview",
    "production_versions", "promote", "quarantine_reasons", "quarantine_rows", "rollback", "runs", "series_span",
    "sleeves", "trades", "trades_csv", "working_orders",
]
