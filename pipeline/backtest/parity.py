"""The parity report: did the runtime trade one UTC day exactly as a backtest of the same sleeves over the same
bars would have?

The backtest runs the runtime's portfolio (the same portfolio file, or the same single strategy) through
``pipeline.backtest.portfolio.run_portfolio`` over the lake's bars from ``since`` (the first bar the runtime traded; by
default the first stored bar, as a replay started without ``--start``) to the end of the day, so every
sleeve's ledger has the same history as the runtime's. Then, per sleeve, the day's fills are matched by
(fill time, side):

* **matched** fills are in both; their price difference is reported in basis points of the backtest price;
* **missed** fills are in the backtest only, **extra** fills in the runtime only;
* **agreement** = matched / (matched + missed + extra), 1.0 when neither side filled anything.

Closed trades of the day are matched the same way by (entry time, exit time, side). The report is stored as
``<data_dir>/reports/<date>/parity.json`` and ``parity.md``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from pipeline.backtest.series import lake_series_loader
from pipeline.data.catalog import read_bars
from pipeline.data.lake import atomic_write_bytes
from pipeline.domain import DataError, Timeframe, parse_symbol, parse_utc
from pipeline.models.registry import ModelRegistry
from pipeline.reports.summary import REPORTS_DIR, day_bounds
from pipeline.settings import Settings
from pipeline.state import StateStore
from pipeline.strategies import REGISTRY


@dataclass(frozen=True)
class SleeveParity:
    sleeve: str
    runtime_fills: int
    backtest_fills: int
    matched: int
    missed: list[dict[str, Any]]
    extra: list[dict[str, Any]]
    price_diff_bps_max: float | None
    price_diff_bps_mean: float | None
    runtime_trades: int
    backtest_trades: int
    trades_matched: int
    missed_trades: list[dict[str, Any]]
    extra_trades: list[dict[str, Any]]

    @property
    def agreement(self) -> float:
        compared = self.matched + len(self.missed) + len(self.extra)
        return 1.0 if compared == 0 else self.matched / compared

    def to_json(self) -> dict[str, Any]:
        return {"sleeve": self.sleeve, "agreement": self.agreement, "runtime_fills": self.runtime_fills,
                "backtest_fills": self.backtest_fills, "matched": self.matched, "missed": self.missed,
                "extra": self.extra, "price_diff_bps_max": self.price_diff_bps_max,
                "price_diff_bps_mean": self.price_diff_bps_mean, "runtime_trades": self.runtime_trades,
                "backtest_trades": self.backtest_trades, "trades_matched": self.trades_matched,
                "missed_trades": self.missed_trades, "extra_trades": self.extra_trades}


@dataclass(frozen=True)
class ParityReport:
    day: date
    since: str | None
    sleeves: list[SleeveParity]

    @property
    def agreement(self) -> float:
        matched = sum(s.matched for s in self.sleeves)
        compared = matched + sum(len(s.missed) + len(s.extra) for s in self.sleeves)
        return 1.0 if compared == 0 else matched / compared

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "since": self.since, "agreement": self.agreement,
                "missed": sum(len(s.missed) for s in self.sleeves), "extra": sum(len(s.extra) for s in self.sleeves),
                "sleeves": [s.to_json() for s in self.sleeves]}


def single_strategy_portfolio(strategy: str, symbol: str, timeframe: str, params: dict[str, str] | None = None,
                              engine: dict[str, Any] | None = None, cash: float = 100_000.0) -> PortfolioConfig:
    """The one-sleeve portfolio (id ``main``) the runtime trades when given a single strategy."""
    Timeframe.parse(timeframe)
    return PortfolioConfig.model_validate(
        {"cash": cash, "strategies": [{"id": "main", "strategy": strategy, "symbols": [symbol],
                                       "timeframe": timeframe, "allocation": 1.0, "params": dict(params or {}),
                                       "engine": dict(engine or {})}]})


def parity_report(settings: Settings, store: StateStore, config: PortfolioConfig, day: date,
                  since: str | None = None, venue: str | None = None) -> ParityReport:
    """Compare the runtime's fills and trades of ``day`` with a backtest of ``config`` (module documentation)."""
    start, end = day_bounds(day)
    needs_model = any("model_score" in REGISTRY.build(s.strategy, s.params).requires
                      for s in config.strategies)
    registry = ModelRegistry(settings.mlflow_tracking_uri) if needs_model else None

    def load(symbol: str, tf: Timeframe) -> pd.DataFrame:
        bars = read_bars(settings, symbol, tf, since, pd.Timestamp(end), venue)
        if registry is None:
            return bars
        from pipeline.backtest.nightly import production_scores

        scored = production_scores(registry, bars, symbol, tf, parse_symbol(symbol)[1])
        if scored is None:
            raise DataError(f"a model sleeve trades {symbol} {tf} but it has no production model")
        return bars.assign(model_score=scored[0])

    first = parse_utc(since, "since")
    result = run_portfolio(config, load, lake_series_loader(settings, venue, first, pd.Timestamp(end)))
    fills = [f for f in store.fills() if start <= f.at < end]
    trades = [t for t in store.trades() if start <= t.exit_time < end]
    sleeves = []
    for key, engine in sorted(result.sleeves.items()):
        tested = engine.fills.loc[(engine.fills["timestamp"] >= start) & (engine.fills["timestamp"] < end)]
        closed = engine.trades.loc[(engine.trades["exit_time"] >= start) & (engine.trades["exit_time"] < end)]
        sleeves.append(_compare(key, [f for f in fills if f.sleeve == key], tested,
                                [t for t in trades if t.sleeve == key], closed))
    return ParityReport(day, since, sleeves)


def _compare(key: str, live: list[Any], tested: pd.DataFrame, live_trades: list[Any],
             tested_trades: pd.DataFrame) -> SleeveParity:
    expected: dict[tuple[datetime, str], list[float]] = {}
    row: Any
    for row in tested.itertuples(index=False):
        expected.setdefault((pd.Timestamp(row.timestamp).to_pydatetime(), str(row.side)), []).append(float(row.price))
    diffs: list[float] = []
    extra: list[dict[str, Any]] = []
    for fill in live:
        prices = expected.get((fill.at, fill.side))
        if prices:
            reference = prices.pop(0)
            diffs.append(abs(float(fill.price) - reference) / reference * 10_000.0)
        else:
            extra.append({"at": fill.at.isoformat(), "side": fill.side, "qty": str(fill.qty), "price": str(fill.price)})
    missed = [{"at": at.isoformat(), "side": side, "price": price}
              for (at, side), prices in sorted(expected.items()) for price in prices]
    rows: list[Any] = list(tested_trades.itertuples(index=False))
    wanted = Counter((pd.Timestamp(t.entry_time).to_pydatetime(), pd.Timestamp(t.exit_time).to_pydatetime(),
                      str(t.side)) for t in rows)
    extra_trades = []
    matched_trades = 0
    for trade in live_trades:
        signature = (trade.entry_time, trade.exit_time, trade.side)
        if wanted[signature] > 0:
            wanted[signature] -= 1
            matched_trades += 1
        else:
            extra_trades.append({"entry": trade.entry_time.isoformat(), "exit": trade.exit_time.isoformat(),
                                 "side": trade.side, "pnl": str(trade.pnl)})
    missed_trades = [{"entry": entry.isoformat(), "exit": exit_.isoformat(), "side": side}
                     for (entry, exit_, side), count in sorted(wanted.items()) for _ in range(count)]
    return SleeveParity(
        sleeve=key, runtime_fills=len(live), backtest_fills=len(tested), matched=len(diffs), missed=missed,
        extra=extra, price_diff_bps_max=max(diffs) if diffs else None,
        price_diff_bps_mean=sum(diffs) / len(diffs) if diffs else None, runtime_trades=len(live_trades),
        backtest_trades=len(tested_trades), trades_matched=matched_trades, missed_trades=missed_trades,
        extra_trades=extra_trades)


def markdown(report: ParityReport) -> str:
    lines = [f"# Parity {report.day.isoformat()} (UTC): runtime vs backtest", "",
             f"Overall agreement: {report.agreement:.1%}", "",
             "| sleeve | agreement | runtime fills | backtest fills | missed | extra | max price diff (bps) | "
             "trades matched |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report.sleeves:
        worst = "-" if s.price_diff_bps_max is None else f"{s.price_diff_bps_max:.3g}"
        lines.append(f"| {s.sleeve} | {s.agreement:.1%} | {s.runtime_fills} | {s.backtest_fills} | {len(s.missed)} | "
                     f"{len(s.extra)} | {worst} | {s.trades_matched}/{max(s.runtime_trades, s.backtest_trades)} |")
    return "\n".join(lines) + "\n"


def write_parity(report: ParityReport, data_dir: Path) -> Path:
    """Store the report under ``<data_dir>/reports/<date>/``; returns the JSON file."""
    folder = data_dir / REPORTS_DIR / report.day.isoformat()
    atomic_write_bytes(folder / "parity.json", json.dumps(report.to_json(), indent=2).encode())
    atomic_write_bytes(folder / "parity.md", markdown(report).encode())
    return folder / "parity.json"
