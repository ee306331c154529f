"""Stale data: a live feed that stops delivering bars pauses new entries and raises an alert; its next bars
lift the pause again (an operator's pause stays). The runtime runs on the real ccxt client against a fake
Binance whose clock stands still while the runtime's clock moves on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.node import Node
from tests.conftest import shared_file
from tests.fakes.binance_server import FakeBinance
from tests.waiting import wait_until

KEY = "binance:BTC/USDT:1m"
SLEEVE = "main:BTC/USDT"
START = pd.Timestamp("2024-07-29", tz="UTC")
MINUTE = pd.Timedelta(minutes=1)


@pytest.fixture
def venue() -> Iterator[FakeBinance]:
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                            filters=[("timestamp", ">=", START), ("timestamp", "<", START + 600 * MINUTE)])
    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", frame.reset_index(drop=True))
        yield server


def test_stale_feed_pauses_entries_alerts_and_resumes_when_bars_return(tmp_path: Path, venue: FakeBinance) -> None:
    clock = FixedClock(START + 300 * MINUTE + pd.Timedelta(seconds=5))
    venue.set_now(clock.now())
    settings = Settings(data_dir=tmp_path, ccxt_rest_url=venue.url, _env_file=None)  # type: ignore[call-arg]
    feed = CcxtFeed(build_exchange(settings, "binance"), {KEY: "BTC/USDT"}, Timeframe.parse("1m"), clock,
                    poll_s=0.05, warmup=200, tick_s=0.05, backoff_base_s=0.05, backoff_cap_s=0.1)
    config = PortfolioConfig.model_validate({"cash": 100_000, "strategies": [
        {"id": "main", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 1.0,
         "params": {"fast": 3, "slow": 8}}]})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    events: list[tuple[str, str]] = []
    node = Node(store, config, feed, {SLEEVE: KEY}, PaperBroker(), clock=clock,
                on_event=lambda kind, text: events.append((kind, text)), stale_after_bars=3, heartbeat_s=0.01)
    node.start(fresh=True)
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()

    def cursor() -> pd.Timestamp | None:
        value = store.cursor(KEY)
        return None if value is None else pd.Timestamp(value)

    def beat() -> pd.Timestamp | None:
        state = store.bot_state()
        return None if state is None or state.heartbeat_at is None else pd.Timestamp(state.heartbeat_at)

    def paused() -> bool:
        return "paused" in store.ledgers()[SLEEVE].tripped.split(",")

    def move(to: pd.Timestamp, venue_too: bool = True) -> None:
        clock.set(to)
        if venue_too:
            venue.set_now(to)

    try:
        for minute in range(301, 306):  # bars arrive as they close
            move(START + minute * MINUTE + pd.Timedelta(seconds=5))
            wait_until(lambda m=minute: cursor() == START + (m - 1) * MINUTE, f"bar {minute - 1}")
        assert not paused()
        assert not store.events("stale")

        # The venue stops just before 05:05, so the bar of 05:04 (closed at 05:05) is the last it ever serves.
        venue.set_now(START + 305 * MINUTE - pd.Timedelta(milliseconds=1))
        for second in (5, 6):  # the beat at :06 is written after the node judged the feed at :05
            move(START + 307 * MINUTE + pd.Timedelta(seconds=second), venue_too=False)
            wait_until(lambda s=second: beat() == START + 307 * MINUTE + pd.Timedelta(seconds=s),
                       f"the heartbeat at 05:07:0{second}")
        assert not store.events("stale"), "the last bar closed 2.1 bars ago: not yet stale"
        move(START + 308 * MINUTE + pd.Timedelta(seconds=5), venue_too=False)  # 3.1 bars ago: stale
        wait_until(lambda: bool(store.events("stale")), "the stale event")
        assert venue.requests_to("klines"), "the feed kept asking the venue"
        wait_until(paused, "entries paused")
        stale = store.events("stale")
        assert len(stale) == 1 and KEY in stale[0].detail and "paused" in stale[0].detail
        assert any(kind == "stale" for kind, _ in events)  # the alert (Telegram gets every event)
        assert cursor() == START + 304 * MINUTE

        move(START + 312 * MINUTE + pd.Timedelta(seconds=5))  # the venue is back: missed bars are backfilled
        wait_until(lambda: cursor() == START + 311 * MINUTE, "the backfill")
        wait_until(lambda: not paused(), "entries resumed")
        assert [e.kind for e in store.events() if e.kind in ("stale", "fresh")] == ["stale", "fresh"]

        # an operator's pause given while stale is kept when bars return
        venue.set_now(START + 312 * MINUTE - pd.Timedelta(milliseconds=1))  # the venue stops again
        move(START + 315 * MINUTE + pd.Timedelta(seconds=5), venue_too=False)
        wait_until(lambda: len(store.events("stale")) == 2, "the second stale event")
        store.add_command("pause", "cli")
        wait_until(lambda: not store.pending_commands(), "the pause command applied")
        move(START + 320 * MINUTE + pd.Timedelta(seconds=5))
        wait_until(lambda: cursor() == START + 319 * MINUTE, "the second backfill")
        wait_until(lambda: len(store.events("fresh")) == 2, "the second fresh event")
        assert paused(), "the operator's pause was lifted by fresh data"
    finally:
        node.request_stop("test over")
        runner.join(timeout=10)
    assert not runner.is_alive()
    store.close()
