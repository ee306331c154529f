"""Breaker trips and releases in the state store (and its schema upgrade), the runtime and the daily summary."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from pipeline.domain import Timeframe
from pipeline.domain.values import UTCDateTime
from pipeline.reports.summary import daily_summary, markdown
from pipeline.state import SCHEMA_VERSION, BreakerEventRow, BreakerRecord, SchemaVersion, StateStore, StepRecord
from tests.conftest import shared_file
from tests.pipeline.state import stores

db_url = stores.db_url  # the store fixtures: a fresh database on SQLite and on PostgreSQL
open_store = stores.open_store


# --------------------------------------------------------------------------------------------------- the store

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def test_the_store_records_trips_and_releases_at_the_same_bar(open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    events = [BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.06, threshold=0.05,
                            action="release"),
              BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.07, threshold=0.05,
                            action="trip"),
              BreakerRecord(sleeve="portfolio", at=T0 + timedelta(hours=1), rule="portfolio_drawdown", value=0.0,
                            threshold=0.25, action="release")]
    first = store.apply_step(StepRecord(breakers=events))
    again = store.apply_step(StepRecord(breakers=events))
    assert (first.new_breaker_events, again.new_breaker_events) == (3, 0)
    stored = [(e.sleeve, e.rule, e.action, e.value) for e in store.breaker_events()]
    assert sorted(stored) == sorted([("main:BTC/USDT", "daily_loss", "release", 0.06),
                                     ("main:BTC/USDT", "daily_loss", "trip", 0.07),
                                     ("portfolio", "portfolio_drawdown", "release", 0.0)])
    with pytest.raises(ValueError, match=r"(?s)BreakerRecord\naction\n.*'trip' or 'release'.*input_value='latched'"):
        BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.06, threshold=0.05, action="latched")


def test_a_version_2_database_gets_breaker_actions_and_keeps_its_events(
        open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    version_2 = sa.Table(  # the table as version 2 defined it: no action, one event per (sleeve, time, rule)
        "breaker_events", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sleeve", sa.String, nullable=False), sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("rule", sa.String, nullable=False), sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.UniqueConstraint("sleeve", "at", "rule", name="uq_breaker_events_sleeve_at_rule"))
    with store.engine.begin() as conn:
        BreakerEventRow.__table__.drop(conn)  # type: ignore[attr-defined]
        version_2.create(conn)
        conn.execute(version_2.insert().values(sleeve="main:BTC/USDT", at=T0, rule="max_drawdown", value=0.25,
                                               threshold=0.2))
        for column in ("kind", "stop_price", "expires_at"):  # the order columns of version 4
            conn.exec_driver_sql(f"ALTER TABLE orders DROP COLUMN {column}")
    with store.transaction() as session:
        row = session.get(SchemaVersion, 1)
        assert row is not None
        row.version = 2
    store.close()
    with pytest.raises(Exception, match="schema version 2"):
        open_store(read_only=True)  # a reader never changes the database
    upgraded = open_store()
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert [(e.rule, e.action, e.value) for e in upgraded.breaker_events()] == [("max_drawdown", "trip", 0.25)]
    release = BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="max_drawdown", value=0.25, threshold=0.2,
                            action="release")
    assert upgraded.apply_step(StepRecord(breakers=[release])).new_breaker_events == 1
    assert [e.action for e in upgraded.breaker_events()] == ["trip", "release"]
    columns = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("breaker_events")}
    assert "action" in columns


# ------------------------------------------------------------------------------------------------- the runtime


def test_the_runtime_stores_the_backtests_trips_and_releases(tmp_path: Path) -> None:
    from runtime.brokers import PaperBroker
    from runtime.feeds import ReplayFeed
    from runtime.node import Node

    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-2000:].reset_index(drop=True)
    config = PortfolioConfig.model_validate({
        "cash": 100_000,
        "strategies": [{"id": "main", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1h",
                        "allocation": 1.0, "params": {"fast": "3", "slow": "8"},
                        "engine": {"max_position": 1.0, "daily_loss": 0.01, "max_trades_per_day": 4,
                                   "max_consecutive_losses": 3, "max_drawdown": None,
                                   "breaker_cooldown_bars": 12}}],
    })
    reference = run_portfolio(config, lambda symbol, tf: hours).sleeves["main:BTC/USDT"].breaker_events
    assert set(reference["action"]) == {"trip", "release"}
    assert {"new_day", "cooldown"} <= set(reference["released_by"])
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    texts: list[str] = []
    try:
        node = Node(store, config, ReplayFeed({"binance:BTC/USDT:1h": hours}, Timeframe.parse("1h"), batch_size=97),
                    {"main:BTC/USDT": "binance:BTC/USDT:1h"}, PaperBroker(),
                    on_event=lambda kind, text: texts.append(text) if kind == "breaker" else None)
        node.start(fresh=True)
        node.run()
        stored = [(e.at, e.rule, e.action) for e in store.breaker_events() if e.sleeve == "main:BTC/USDT"]
    finally:
        store.close()
    expected = [(t.to_pydatetime(), r, a) for t, r, a in
                zip(reference["timestamp"], reference["rule"], reference["action"], strict=True)]
    assert sorted(stored) == sorted(expected)
    assert any("released at the next trading day after" in t for t in texts)
    assert sum(t.startswith("Circuit breaker tripped: ") for t in texts) == (reference["action"] == "trip").sum()


def test_the_daily_summary_counts_trips_and_releases(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        day = T0.date()
        store.apply_step(StepRecord(breakers=[
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=3), rule="daily_loss", value=0.06,
                          threshold=0.05, action="trip"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=24), rule="daily_loss", value=0.06,
                          threshold=0.05, action="release"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=5), rule="consecutive_losses", value=5.0,
                          threshold=5.0, action="trip"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=9), rule="consecutive_losses", value=5.0,
                          threshold=5.0, action="release"),
        ]))
        summary = daily_summary(store, day)
    finally:
        store.close()
    assert (summary.portfolio.breaker_trips, summary.portfolio.breaker_releases) == (2, 1)
    assert summary.to_json()["portfolio"]["breaker_trips"] == 2
    text = markdown(summary)
    assert "consecutive_losses released" in text and "daily_loss tripped (0.06 > 0.05)" in text
