"""Backtests: a strategy's decisions over a history, driven through the engine core, with metrics and storage.

A run is stored under ``<data_dir>/backtests/<run_id>/``: ``fills.parquet``, ``trades.parquet``,
``equity.parquet``, ``rejections.parquet``, ``breaker_events.parquet`` and ``summary.json`` (parameters,
metrics, timings). ``open_backtests`` gives DuckDB views over every stored run.

Conventions (engine defaults, see ``pipeline.engine.kernel``): decisions at the bar close; market fills at the
next bar's open (or that close with ``fill="close"``); a decision on the last bar is not filled; a position
still open after the last bar is valued at the last close and is not counted as a trade.

Circuit breakers: ``breaker_events.parquet`` holds every trip and release (``action``), and the summary
counts them (``breaker_trips``, ``breaker_releases``, ``breaker_rules``: the rules that tripped) with
``paused_bars``, the bars whose entries a breaker blocked. The daily breakers release at the next trading day;
the drawdown and loss-streak breakers wait for an operator, which a backtest models with the engine's
``breaker_cooldown_bars`` (without it, one trip pauses the rest of the run: the summary shows it).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.backtest.portfolio import PortfolioResult
from pipeline.clock import Clock, SystemClock
from pipeline.data.lake import atomic_write_bytes, atomic_write_table
from pipeline.data.quality import exchange_calendar
from pipeline.domain import CALENDAR_24_7, DataError, Instrument, Timeframe, epoch_ms, parse_symbol
from pipeline.engine import EngineConfig, EngineResult, run
from pipeline.strategies import Strategy, check_features
from pipeline.strategies.other_series import check_series

TABLES = ("fills", "trades", "equity", "rejections", "breaker_events")


def breaker_counts(events: pd.DataFrame) -> dict[str, Any]:
    """``breaker_trips``, ``breaker_releases`` and ``breaker_rules`` (the rules that tripped, comma-separated)
    of a breaker events frame (rows without an ``action`` are trips, as stored before releases existed)."""
    actions = events["action"] if "action" in events else pd.Series("trip", index=events.index)
    trips = events[actions == "trip"]
    return {"breaker_trips": len(trips), "breaker_releases": int((actions == "release").sum()),
            "breaker_rules": ",".join(sorted(set(trips["rule"].astype(str)))) if len(trips) else ""}


@dataclass(frozen=True)
class BacktestResult:
    run_id: str
    strategy: str
    params: dict[str, Any]
    reference: str
    """How the strategy was named when the run was asked for: a name, ``PATH.py:Class`` or ``module:Class``."""
    config: EngineConfig
    engine: EngineResult
    metrics: dict[str, Any]
    bars: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    seconds: float
    """Engine time: the compiled run over the bars, excluding data loading and one-time compilation."""
    strategy_seconds: float
    warmup_seconds: float
    """One-time cost of loading or compiling the kernel in this process (0 once warm)."""

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "strategy": self.strategy,
            "strategy_ref": self.reference,
            "params": self.params,
            "config": self.config.model_dump(),
            "bars": self.bars,
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
            "trades": len(self.engine.trades),
            "fills": len(self.engine.fills),
            "rejections": len(self.engine.rejections),
            "breaker_events": len(self.engine.breaker_events),
            **breaker_counts(self.engine.breaker_events),
            "paused_bars": self.engine.paused_bars,
            "final_equity": float(self.engine.equity["equity"].iloc[-1]) if self.bars else self.config.cash,
            "open_units": self.engine.open_units,
            "seconds": self.seconds,
            "strategy_seconds": self.strategy_seconds,
            "warmup_seconds": self.warmup_seconds,
            **{key: value for key, value in self.metrics.items() if key not in ("trades", "bars")},
        }


_WARM = False


def warm_up() -> float:
    """Load (or compile) the kernel once per process; returns the seconds it took."""
    global _WARM
    if _WARM:
        return 0.0
    started = time.perf_counter()
    stamps = pd.Series(pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC").as_unit("ms"))
    tiny = pd.DataFrame({"timestamp": stamps, **{c: np.ones(3) for c in ("open", "high", "low", "close")}})
    run(tiny, np.array([np.nan, 1.0, 0.0]), np.array([-1, 0, 0]), ("warm",), EngineConfig())
    _WARM = True
    return time.perf_counter() - started


def in_session(bars: pd.DataFrame, instrument: Instrument | None, timeframe: Timeframe) -> np.ndarray | None:
    """For intraday stock bars: whether each bar opens inside an exchange session (None: always open)."""
    if instrument is None or instrument.calendar == CALENDAR_24_7 or timeframe.is_daily or bars.empty:
        return None
    calendar = exchange_calendar(instrument.calendar)
    stamps = bars["timestamp"]
    minutes = calendar.minutes_in_range(stamps.iloc[0], stamps.iloc[-1])
    return np.isin(epoch_ms(stamps), np.asarray(minutes.as_unit("ms").asi8))


def run_backtest(
    bars: pd.DataFrame,
    strategy: Strategy,
    config: EngineConfig,
    timeframe: Timeframe,
    instrument: Instrument | None = None,
    features: pd.DataFrame | None = None,
    params: dict[str, Any] | None = None,
    clock: Clock | None = None,
    reference: str | None = None,
) -> BacktestResult:
    """Run ``strategy`` over ``bars`` (canonical frame) through the engine and compute its metrics (``clock``
    stamps the run id; wall time by default). ``features`` is the strategy's frame when it reads more than
    ``bars`` (a model score, the columns of other series: ``pipeline.backtest.series``)."""
    if bars.empty:
        raise DataError("no bars to backtest: the selected range is empty")
    frame = bars if features is None else features
    check_features(strategy, frame)
    check_series(strategy, frame)
    warmup_seconds = warm_up()
    started = time.perf_counter()
    targets = strategy.targets(frame)
    strategy_seconds = time.perf_counter() - started
    sessions = in_session(bars, instrument, timeframe)
    started = time.perf_counter()
    result = run(bars, targets.exposure, targets.reason, targets.reasons, config, sessions, targets.orders)
    seconds = time.perf_counter() - started
    asset_class = instrument.asset_class.value if instrument is not None else "crypto"
    metrics = compute_metrics(
        result.equity, result.trades, result.fills, bars["close"], bars_per_year(timeframe.seconds, asset_class)
    )
    parameters = dict(params or {})
    run_id = _run_id(strategy.name, parameters, config, bars, (clock or SystemClock()).now())
    return BacktestResult(
        run_id=run_id,
        strategy=strategy.name,
        params=parameters,
        reference=reference or strategy.name,
        config=config,
        engine=result,
        metrics=metrics,
        bars=len(bars),
        first=pd.Timestamp(bars["timestamp"].iloc[0]),
        last=pd.Timestamp(bars["timestamp"].iloc[-1]),
        seconds=seconds,
        strategy_seconds=strategy_seconds,
        warmup_seconds=warmup_seconds,
    )


def _run_id(name: str, params: dict[str, Any], config: EngineConfig, bars: pd.DataFrame, now: pd.Timestamp) -> str:
    digest = hashlib.sha256(
        json.dumps(
            [name, params, config.model_dump(), len(bars), str(bars["timestamp"].iloc[0]), uuid.uuid4().hex],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:8]
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{name}-{digest}"


def save_backtest(result: BacktestResult, root: Path) -> Path:
    """Store a run under ``root/<run_id>/`` (Parquet tables + ``summary.json``), each file written atomically."""
    folder = root / result.run_id
    engine = result.engine
    for name in TABLES:
        frame: pd.DataFrame = getattr(engine, name)
        atomic_write_table(folder / f"{name}.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    summary = json.dumps(result.summary(), indent=2, default=str).encode()
    atomic_write_bytes(folder / "summary.json", summary)
    return folder


def open_backtests(root: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB views over stored runs: ``runs`` (one row per summary) and one view per table with ``run_id``."""
    con = duckdb.connect()
    summaries = sorted(root.glob("*/summary.json"))
    if summaries:
        listing = ", ".join("'" + p.as_posix().replace("'", "''") + "'" for p in summaries)
        con.execute(f"CREATE VIEW runs AS SELECT * FROM read_json_auto([{listing}], union_by_name=true)")
    for name in TABLES:
        files = sorted(root.glob(f"*/{name}.parquet"))
        if not files:
            continue
        listing = ", ".join("'" + p.as_posix().replace("'", "''") + "'" for p in files)
        con.execute(
            f"CREATE VIEW {name} AS SELECT regexp_extract(filename, '([^/]+)/[^/]+$', 1) AS run_id, * "
            f"FROM read_parquet([{listing}], filename=true, union_by_name=true)"
        )
    return con


def save_portfolio(result: PortfolioResult, root: Path, save: bool = True,
                   clock: Clock | None = None) -> tuple[dict[str, Any], Path | None]:
    """Metrics of a portfolio run and, when ``save``, its tables under ``root/<run_id>/`` (one folder, with a
    ``sleeve`` column in the per-sleeve tables and ``portfolio_events.parquet`` for portfolio breakers;
    ``clock`` stamps the run id, wall time by default)."""
    curve = result.equity
    tables: dict[str, pd.DataFrame] = {}
    for name in ("fills", "trades", "rejections", "breaker_events"):
        parts = [getattr(r, name).assign(sleeve=key) for key, r in result.sleeves.items()]
        tables[name] = pd.concat(parts, ignore_index=True)
    steps = np.diff(epoch_ms(curve["timestamp"]))
    seconds_per_bar = int(np.median(steps) // 1000) if len(steps) else 86_400
    stocks = all(parse_symbol(s)[1].value == "stock" for spec in result.config.strategies for s in spec.symbols)
    metrics = compute_metrics(
        curve[["timestamp", "equity", "cash", "position_value"]],
        tables["trades"],
        tables["fills"],
        curve["buy_and_hold"],
        bars_per_year(max(seconds_per_bar, 60), "stock" if stocks else "crypto"),
    )
    sleeves = []
    for key, r in result.sleeves.items():
        final = float(r.equity["equity"].iloc[-1])
        start_cash = _sleeve_cash(result, key)
        sleeves.append({"sleeve": key, "trades": len(r.trades), "final_equity": final,
                        "total_return": final / start_cash - 1, "breaker_events": len(r.breaker_events),
                        **breaker_counts(r.breaker_events), "paused_bars": r.paused_bars,
                        "rejections": len(r.rejections)})
    every_event = pd.concat([tables["breaker_events"][["rule", "action"]], result.events[["rule", "action"]]],
                            ignore_index=True)
    stamp = (clock or SystemClock()).now().strftime('%Y%m%dT%H%M%S')
    run_id = f"{stamp}-portfolio-{uuid.uuid4().hex[:8]}"
    summary: dict[str, Any] = {
        "run_id": run_id,
        "kind": "portfolio",
        "config": result.config.model_dump(),
        "bars": len(curve),
        "first": curve["timestamp"].iloc[0].isoformat(),
        "last": curve["timestamp"].iloc[-1].isoformat(),
        "final_equity": float(curve["equity"].iloc[-1]),
        "portfolio_events": len(result.events),
        **breaker_counts(every_event),
        "paused_bars": int(curve["paused"].sum()),
        "sleeves": sleeves,
        **{key: value for key, value in metrics.items() if key != "bars"},
    }
    if not save:
        return summary, None
    folder = root / run_id
    for name, frame in {**tables, "equity": curve, "portfolio_events": result.events}.items():
        atomic_write_table(folder / f"{name}.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    atomic_write_bytes(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return summary, folder


def _sleeve_cash(result: PortfolioResult, key: str) -> float:
    spec_id = key.split(":", 1)[0]
    spec = next(s for s in result.config.strategies if s.id == spec_id)
    return result.config.cash * spec.allocation / len(spec.symbols)
