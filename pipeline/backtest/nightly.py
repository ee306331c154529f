"""Scheduled and on-demand backtests: the nightly run over the universe (or a portfolio file) and the ad hoc run
the dashboard launches, each stored under ``<data_dir>/backtests/<run_id>/`` and logged to MLflow.

* **Nightly** (``nightly_backtests``): over the last ``nightly_backtest_days`` days of bars, either the
  portfolio file (every sleeve, the portfolio caps, one stored run) or every built-in strategy on every
  universe series. The ``hybrid`` strategy runs with the version that carries the ``production`` alias of
  ``hybrid-<SYMBOL>-<tf>``; without one it is skipped, and the report says so. Each run is logged to the MLflow
  experiment ``nightly-backtests`` with its parameters, metrics and ``summary.json``. The strategies run with
  the engine's defaults and ``nightly_breaker_cooldown_bars`` as their breaker cool-down: set, a drawdown or
  loss-streak trip releases after that many bars, as an operator's reset would; unset, it pauses the rest of
  the run. (A portfolio file's sleeves keep the engine settings the file gives them.)
* **Ad hoc** (``adhoc_backtest``): one strategy on one series with explicit costs and sizing, logged to
  ``adhoc-backtests``.

Every run's summary counts its circuit-breaker trips and releases and the bars its entries were paused
(``breaker_trips``, ``breaker_releases``, ``paused_bars``); ``StoredBacktest.line`` says them in one line, so a
breaker that paused most of a run is seen in the report, not only on the dashboard.

Scores of a production model (``production_scores``) are computed exactly as the runtime computes them: the
model's own feature spec over the same bars, one probability per bar (NaN before the warm-up).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest.adhoc import AdhocRequest
from pipeline.backtest.portfolio import PortfolioConfig, load_portfolio, run_portfolio
from pipeline.backtest.run import run_backtest, save_backtest, save_portfolio
from pipeline.backtest.series import lake_series_loader, lake_venue, with_lake_series
from pipeline.clock import Clock
from pipeline.data.catalog import read_bars
from pipeline.data.lake import Lake
from pipeline.data.universe import SeriesSpec, universe
from pipeline.domain import DataError, Instrument, Timeframe, parse_symbol, parse_utc, symbol_key
from pipeline.engine import EngineConfig
from pipeline.features.build import FeatureSpec, build_features
from pipeline.models.registry import ModelRegistry, model_name
from pipeline.settings import Settings
from pipeline.strategies import REGISTRY, Strategy

log = logging.getLogger(__name__)

NIGHTLY_EXPERIMENT = "nightly-backtests"
ADHOC_EXPERIMENT = "adhoc-backtests"
MODEL_COLUMN = "model_score"


def run_line(label: str, summary: dict[str, Any]) -> str:
    """A backtest in one line: trades, return, breaker trips and releases (and the rules), paused bars."""
    total = summary.get("total_return")
    text = f"{label}: {summary.get('trades', 0)} trades, total return "
    text += "-" if total is None else f"{total:.2%}"
    text += f", breakers: {summary.get('breaker_trips', 0)} trips, {summary.get('breaker_releases', 0)} releases"
    if summary.get("breaker_rules"):
        text += f" ({summary['breaker_rules']})"
    paused, bars = summary.get("paused_bars"), summary.get("bars")
    if paused is not None and bars:
        text += f", {paused} of {bars} bars paused ({paused / bars:.0%})"
    return text


@dataclass(frozen=True)
class StoredBacktest:
    """A backtest that was run, stored and logged."""

    label: str
    run_id: str
    folder: Path
    summary: dict[str, Any]
    mlflow_run_id: str

    def line(self) -> str:
        """The run in one line (``run_line``)."""
        return run_line(self.label, self.summary)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "run_id": self.run_id, "folder": str(self.folder),
                "mlflow_run_id": self.mlflow_run_id, "summary": self.summary, "line": self.line()}


@dataclass(frozen=True)
class NightlyReport:
    start: pd.Timestamp
    end: pd.Timestamp
    runs: list[StoredBacktest] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "runs": [r.to_json() for r in self.runs], "skipped": self.skipped}


def production_scores(registry: ModelRegistry, bars: pd.DataFrame, symbol: str, timeframe: Timeframe,
                      asset_class: Any) -> tuple[np.ndarray, str] | None:
    """The production model's probability for every bar and its version, or None without a production model."""
    name = model_name("hybrid", symbol_key(symbol), str(timeframe))
    if registry.production(name) is None:
        return None
    model = registry.load_production(name)
    spec = FeatureSpec.model_validate(model.feature_spec)
    scores = np.full(len(bars), np.nan)
    if len(bars) > spec.warmup + model.seq_len:
        features = build_features(bars, spec, asset_class)
        scores[len(bars) - len(features):] = model.predict(features, spec.hash())
    return scores, f"{name} v{model.version}"


def nightly_backtests(settings: Settings, clock: Clock, portfolio: Path | None = None) -> NightlyReport:
    """The nightly backtests (module documentation); raises when nothing at all could be run."""
    end = clock.now()
    start = end - pd.Timedelta(days=settings.nightly_backtest_days)
    registry = ModelRegistry(settings.mlflow_tracking_uri)
    report = NightlyReport(start, end)
    config = EngineConfig(breaker_cooldown_bars=settings.nightly_breaker_cooldown_bars)
    if portfolio is not None:
        report.runs.append(_portfolio_run(settings, registry, load_portfolio(portfolio), start, end, portfolio))
        return report
    for spec in universe(settings):
        venue = spec.venue(settings)
        try:
            bars = read_bars(settings, spec.symbol, spec.timeframe, start, end, venue)
        except DataError as exc:
            report.skipped.append(f"{spec.text}: {exc}")
            continue
        if bars.empty:
            report.skipped.append(f"{spec.text}: no bars between {start} and {end}")
            continue
        instrument = _instrument(settings, spec.symbol, venue)
        for name in REGISTRY.names():
            try:
                strategy = REGISTRY.build(name)
            except DataError as exc:  # a trader's strategy that no longer loads: reported, the others still run
                report.skipped.append(f"{name} on {spec.text}: {exc}")
                continue
            frame, model = bars, None
            if MODEL_COLUMN in strategy.requires:
                scored = production_scores(registry, bars, spec.symbol, spec.timeframe, spec.asset_class)
                if scored is None:
                    report.skipped.append(f"{name} on {spec.text}: no production model")
                    continue
                frame, model = bars.assign(**{MODEL_COLUMN: scored[0]}), scored[1]
            try:
                frame = with_lake_series(settings, strategy, frame, spec.timeframe, venue, start, end)
            except DataError as exc:  # another series it reads is not in the lake: reported, the others run
                report.skipped.append(f"{name} on {spec.text}: {exc}")
                continue
            label = f"{name} {venue}:{spec.symbol}:{spec.timeframe}"
            report.runs.append(_single_run(settings, registry, NIGHTLY_EXPERIMENT, label, strategy, name, {},
                                           config, frame, spec.timeframe, instrument, model))
    if not report.runs:
        raise DataError("the nightly backtest ran nothing: " + "; ".join(report.skipped))
    return report


def adhoc_backtest(settings: Settings, request: AdhocRequest) -> StoredBacktest:
    """Run, store and log one ad hoc backtest; bad parameters raise a ``DataError`` that names them."""
    from pydantic import ValidationError

    params = request.text_params
    strategy = REGISTRY.build(request.strategy, params)
    try:
        config = EngineConfig(cash=request.cash, fee_bps=request.fee_bps, slippage_bps=request.slippage_bps,
                              max_position=request.max_position, breaker_cooldown_bars=request.breaker_cooldown_bars)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DataError(f"ad hoc backtest parameters: {problems}") from exc
    tf = Timeframe.parse(request.timeframe)
    bars = read_bars(settings, request.symbol, tf, parse_utc(request.start, "start"), parse_utc(request.end, "end"),
                     request.venue)
    if bars.empty:
        raise DataError(f"no {request.symbol} {tf} bars between {request.start} and {request.end}")
    series = Lake(settings.lake_dir).find(request.symbol, venue=request.venue)
    instrument = series[0].instrument if series else None
    registry = ModelRegistry(settings.mlflow_tracking_uri)
    frame, model = bars, None
    if MODEL_COLUMN in strategy.requires:
        asset_class = parse_symbol(request.symbol)[1]
        scored = production_scores(registry, bars, request.symbol, tf, asset_class)
        if scored is None:
            raise DataError(f"strategy {request.strategy!r} needs a production model for {request.symbol} {tf}")
        frame, model = bars.assign(**{MODEL_COLUMN: scored[0]}), scored[1]
    frame = with_lake_series(settings, strategy, frame, tf, lake_venue(settings, request.symbol, request.venue),
                             parse_utc(request.start, "start"), parse_utc(request.end, "end"))
    label = f"{request.strategy} {request.symbol} {tf}"
    return _single_run(settings, registry, ADHOC_EXPERIMENT, label, strategy, request.strategy, params, config, frame,
                       tf, instrument, model)


def _single_run(settings: Settings, registry: ModelRegistry, experiment: str, label: str, strategy: Strategy,
                reference: str, params: dict[str, str], config: EngineConfig, frame: pd.DataFrame,
                timeframe: Timeframe, instrument: Instrument | None, model: str | None) -> StoredBacktest:
    bars = frame[["timestamp", "open", "high", "low", "close", "volume"]]
    result = run_backtest(bars, strategy, config, timeframe, instrument, features=frame, params=params,
                          reference=reference)
    folder = save_backtest(result, settings.data_dir / "backtests")
    summary = result.summary()
    logged = {"strategy": strategy.name, "strategy_ref": reference, "timeframe": str(timeframe), "params": params,
              "symbol": instrument.symbol if instrument else "", "venue": instrument.venue if instrument else "",
              "first": summary["first"], "last": summary["last"], "bars": summary["bars"],
              "engine": config.model_dump(), "backtest_run_id": result.run_id, "model": model or ""}
    mlflow_run = registry.log_backtest_run(
        label, logged, summary, {"summary.json": json.dumps(summary, indent=2, default=str).encode()},
        {"backtest_run_id": result.run_id, "strategy": strategy.name, "stored": str(folder)}, experiment=experiment)
    stored = StoredBacktest(label, result.run_id, folder, summary, mlflow_run)
    log.info("backtest %s (run %s)", stored.line(), result.run_id)
    return stored


def _portfolio_run(settings: Settings, registry: ModelRegistry, config: PortfolioConfig, start: pd.Timestamp,
                   end: pd.Timestamp, path: Path) -> StoredBacktest:
    needs_model = any(MODEL_COLUMN in REGISTRY.build(s.strategy, s.params).requires
                      for s in config.strategies)

    def load(symbol: str, tf: Timeframe) -> pd.DataFrame:
        bars = read_bars(settings, symbol, tf, start, end)
        if not needs_model:
            return bars
        scored = production_scores(registry, bars, symbol, tf, parse_symbol(symbol)[1])
        if scored is None:
            raise DataError(f"portfolio {str(path)!r} has a model sleeve on {symbol} {tf} but no production model")
        return bars.assign(**{MODEL_COLUMN: scored[0]})

    result = run_portfolio(config, load, lake_series_loader(settings, None, start, end))
    summary, folder = save_portfolio(result, settings.data_dir / "backtests")
    assert folder is not None
    label = f"portfolio {path.name}"
    log.info("backtest %s (run %s)", run_line(label, summary), summary["run_id"])
    mlflow_run = registry.log_backtest_run(
        label, {"portfolio": str(path), "config": config.model_dump(), "first": summary["first"],
                "last": summary["last"], "bars": summary["bars"], "backtest_run_id": summary["run_id"]},
        summary, {"summary.json": json.dumps(summary, indent=2, default=str).encode()},
        {"backtest_run_id": summary["run_id"], "strategy": "portfolio", "stored": str(folder)},
        experiment=NIGHTLY_EXPERIMENT)
    return StoredBacktest(label, summary["run_id"], folder, summary, mlflow_run)


def _instrument(settings: Settings, symbol: str, venue: str) -> Instrument | None:
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    return series[0].instrument if series else None




__all__ = ["AdhocRequest", "NightlyReport", "SeriesSpec", "StoredBacktest", "adhoc_backtest", "nightly_backtests",
           "production_scores", "run_line"]
