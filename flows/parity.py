"""``parity-report``: the runtime's fills and trades of the last UTC day against a backtest of the same sleeves
over the same bars: agreement, missed and extra fills and trades, fill price differences; stored under
``<data_dir>/reports/<date>/parity.json``.

Give the runtime's portfolio file, or the same single strategy the runtime trades (``strategy``, ``symbol``,
``timeframe``, ``params`` and the engine settings), and ``since``, the first bar the runtime traded from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import NO_CACHING, clock, report_failure, say, settings
from pipeline.backtest.parity import parity_report, single_strategy_portfolio, write_parity
from pipeline.backtest.portfolio import PortfolioConfig, load_portfolio
from pipeline.domain import DataError
from pipeline.reports.summary import parse_day
from pipeline.state import StateStore


@task(name="compare-runtime-with-backtest", cache_policy=NO_CACHING, timeout_seconds=3600)
def parity_task(config: PortfolioConfig, day: str | None, since: str | None, venue: str | None) -> dict[str, Any]:
    settings_ = settings()
    with StateStore.read_only(settings_.state_url) as store:
        report = parity_report(settings_, store, config, parse_day(day, clock().now().to_pydatetime()),
                               since, venue)
    path = write_parity(report, settings_.data_dir)
    return {**report.to_json(), "stored": str(path)}


@flow(name="parity-report", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def parity_flow(
    day: str | None = None,
    portfolio: str | None = None,
    strategy: str | None = None,
    symbol: str | None = None,
    timeframe: str = "1h",
    params: dict[str, str] | None = None,
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    max_position: float = 0.25,
    cash: float = 100_000.0,
    since: str | None = None,
    venue: str | None = None,
) -> dict[str, Any]:
    """Compare ``day`` (YYYY-MM-DD, UTC; default yesterday) of the runtime with its backtest."""
    if portfolio:
        config = load_portfolio(Path(portfolio))
    elif strategy and symbol:
        config = single_strategy_portfolio(strategy, symbol, timeframe, params,
                                           {"fee_bps": fee_bps, "slippage_bps": slippage_bps,
                                            "max_position": max_position}, cash)
    else:
        raise DataError("parity-report needs the runtime's portfolio file, or its strategy and symbol")
    report = parity_task(config, day, since, venue)
    say(f"parity {report['day']}: agreement {report['agreement']:.1%}, {report['missed']} missed, "
        f"{report['extra']} extra fill(s); stored {report['stored']}")
    return report
