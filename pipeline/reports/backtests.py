"""Stored backtest runs (``<data_dir>/backtests/<run_id>/``): their metrics, equity with drawdown to compare, and
their circuit-breaker events.

The metrics are the ones computed when the run was stored (``summary.json``, see :mod:`pipeline.backtest.metrics`),
including the breaker counts (``breaker_trips``, ``breaker_releases``, ``paused_bars``: bars whose entries a
breaker blocked); nothing is recomputed here except the drawdown curve, ``equity / running peak - 1``, for
plotting. Runs stored before breakers recorded releases show their events as trips and no paused bars (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.backtest.run import open_backtests
from pipeline.domain import DataError

RUN_COLUMNS = (
    "run_id", "kind", "strategy", "bars", "first", "last", "trades", "final_equity", "total_return", "cagr",
    "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "fees", "buy_and_hold_return",
    "breaker_trips", "breaker_releases", "paused_bars", "breaker_rules",
)
EVENT_COLUMNS = ("run_id", "sleeve", "timestamp", "rule", "action", "released_by", "value", "threshold",
                 "bars_tripped")


def backtest_root(data_dir: Path) -> Path:
    return data_dir / "backtests"


def runs(root: Path) -> pd.DataFrame:
    """One row per stored run, newest first, with its headline metrics (missing ones are NaN)."""
    if not any(root.glob("*/summary.json")):
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    con = open_backtests(root)
    try:
        frame: pd.DataFrame = con.sql("SELECT * FROM runs").to_arrow_table().to_pandas()
    finally:
        con.close()
    if "kind" not in frame.columns:
        frame["kind"] = "single"
    frame["kind"] = frame["kind"].fillna("single")
    if "strategy" not in frame.columns:
        frame["strategy"] = None
    frame["strategy"] = frame["strategy"].where(frame["strategy"].notna(), frame["kind"])
    for name in RUN_COLUMNS:
        if name not in frame.columns:
            frame[name] = None
    if "breaker_events" in frame.columns:  # runs stored before releases were recorded: every event was a trip
        frame["breaker_trips"] = frame["breaker_trips"].where(frame["breaker_trips"].notna(), frame["breaker_events"])
    for name in ("first", "last"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame[list(RUN_COLUMNS)].sort_values("run_id", ascending=False, ignore_index=True)


def breaker_events(root: Path, run_ids: Sequence[str]) -> pd.DataFrame:
    """Every breaker trip and release of the given runs, in time order: ``run_id, sleeve`` (the sleeve of a
    portfolio run, ``portfolio`` for the portfolio's own breaker, empty for a single run), ``timestamp, rule,
    action, released_by, value, threshold, bars_tripped``."""
    if not run_ids:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    known = {p.parent.name for p in root.glob("*/summary.json")}
    unknown = sorted(set(run_ids) - known)
    if unknown:
        raise DataError(f"no stored backtest run {', '.join(unknown)} under {root}")
    parts = []
    for run_id in run_ids:
        for name, sleeve in (("breaker_events", ""), ("portfolio_events", "portfolio")):
            path = root / run_id / f"{name}.parquet"
            if not path.exists():
                continue
            try:
                part = pd.read_parquet(path)
            except (OSError, ValueError) as exc:
                raise DataError(f"the stored breaker events of run {run_id} cannot be read: {exc}") from exc
            defaults: dict[str, str | int] = {"sleeve": sleeve, "action": "trip", "released_by": "", "bars_tripped": 0}
            missing = {column: value for column, value in defaults.items() if column not in part.columns}
            parts.append(part.assign(run_id=run_id, **missing))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(EVENT_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame[list(EVENT_COLUMNS)].sort_values(["run_id", "timestamp"], kind="stable", ignore_index=True)


def curves(root: Path, run_ids: Sequence[str]) -> pd.DataFrame:
    """Equity of the given runs (``run_id, timestamp, equity, growth, drawdown``); ``growth`` is equity over
    the run's first equity, so runs with different starting cash compare."""
    columns = ["run_id", "timestamp", "equity", "growth", "drawdown"]
    if not run_ids:
        return pd.DataFrame(columns=columns)
    known = {p.parent.name for p in root.glob("*/equity.parquet")}
    unknown = sorted(set(run_ids) - known)
    if unknown:
        raise DataError(f"no stored backtest run {', '.join(unknown)} under {root}")
    con = open_backtests(root)
    try:
        frame: pd.DataFrame = con.sql(
            "SELECT run_id, timestamp, equity FROM equity WHERE list_contains(?, run_id) ORDER BY run_id, timestamp",
            params=[list(run_ids)],
        ).to_arrow_table().to_pandas()
    except duckdb.Error as exc:
        raise DataError(f"the stored equity of runs {', '.join(run_ids)} cannot be read: {exc}") from exc
    finally:
        con.close()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    grouped = frame.groupby("run_id")["equity"]
    frame["growth"] = frame["equity"] / grouped.transform("first")
    frame["drawdown"] = frame["equity"] / grouped.cummax() - 1.0
    return frame[columns]
