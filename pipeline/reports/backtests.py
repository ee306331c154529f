"""Stored backtest runs (``<data_dir>/backtests/<run_id>/``): their metrics, and equity with drawdown to compare.

The metrics are the ones computed when the run was stored (``summary.json``, see :mod:`pipeline.metrics`);
nothing is recomputed here except the drawdown curve, ``equity / running peak - 1``, for plotting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.backtest import open_backtests
from pipeline.domain import DataError

RUN_COLUMNS = (
    "run_id", "kind", "strategy", "bars", "first", "last", "trades", "final_equity", "total_return", "cagr",
    "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "fees", "buy_and_hold_return",
)


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
    for name in ("first", "last"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame[list(RUN_COLUMNS)].sort_values("run_id", ascending=False, ignore_index=True)


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
