"""Backtest flows.

* ``nightly-backtest``: the portfolio file when one is given, else every strategy (the shipped ones and your
  own) on every universe series, over the last ``nightly_backtest_days`` days, with the current production
  model for ``hybrid``;
  stored under ``<data_dir>/backtests/`` and logged to the MLflow experiment ``nightly-backtests``; each run is
  logged in one line (trades, return, breaker trips and releases, paused bars).
* ``adhoc-backtest``: one backtest with typed parameters (the Prefect UI shows them as a form; the dashboard
  launches the deployment ``adhoc-backtest/adhoc-backtest`` with exactly these parameter names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import NO_CACHING, clock, report_failure, say, settings
from pipeline.backtest.nightly import AdhocRequest, adhoc_backtest, nightly_backtests


@task(name="nightly-backtests", cache_policy=NO_CACHING, timeout_seconds=4 * 3600)
def nightly_task(portfolio: str | None) -> dict[str, Any]:
    return nightly_backtests(settings(), clock(), Path(portfolio) if portfolio else None).to_json()


@flow(name="nightly-backtest", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def nightly_backtest_flow(portfolio: str | None = None) -> dict[str, Any]:
    """Backtest every configured strategy over the last ``nightly_backtest_days`` days."""
    report = nightly_task(portfolio)
    for run in report["runs"]:
        say(f"{run['line']}, stored {run['folder']}")
    for reason in report["skipped"]:
        say(f"skipped {reason}")
    return report


@task(name="adhoc-backtest", cache_policy=NO_CACHING, timeout_seconds=3600)
def adhoc_task(request: AdhocRequest) -> dict[str, Any]:
    return adhoc_backtest(settings(), request).to_json()


@flow(name="adhoc-backtest", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def adhoc_backtest_flow(
    strategy: str,
    symbol: str,
    timeframe: str = "1h",
    venue: str | None = None,
    start: str | None = None,
    end: str | None = None,
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    max_position: float = 0.25,
    cash: float = 100_000.0,
    params: dict[str, str | float] | None = None,
    breaker_cooldown_bars: int | None = None,
) -> dict[str, Any]:
    """One backtest of ``strategy`` on ``symbol``; ``params`` are the strategy's parameters (e.g. fast, slow);
    ``breaker_cooldown_bars`` releases a drawdown or loss-streak breaker that many bars after its trip (none
    keeps it tripped for the rest of the run)."""
    request = AdhocRequest(strategy, symbol, timeframe, venue, start, end, fee_bps, slippage_bps, max_position, cash,
                           dict(params or {}), breaker_cooldown_bars)
    result = adhoc_task(request)
    say(f"{result['label']}: {result['summary']['trades']} trades, final equity {result['summary']['final_equity']}"
        f", stored {result['folder']}")
    return result
