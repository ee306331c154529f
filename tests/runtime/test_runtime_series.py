"""Live paper trading of a strategy that reads another symbol: the runtime on the real ccxt client against a fake
Binance trades BTC/USDT 5m bars with the ETH/USDT hours as its regime (the example ``regime_filtered``), the hours
sometimes served late, and fills exactly as a backtest over the same bars does; the decision state carries the
series' cursor."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from pipeline.backtest.portfolio import PortfolioConfig, sleeves_of
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.engine import run
from pipeline.settings import Settings
from pipeline.state import StateStore
from pipeline.strategies.other_series import series_of, with_series
from runtime.brokers import PaperBroker
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.feeds.waiting import LATE, WaitingFeed
from runtime.node import Node
from tests.conftest import REPO
from tests.fakes.binance_server import FakeBinance
from tests.runtime import test_series_waiting
from tests.runtime.feed_helpers import Venue, ms
from tests.runtime.test_series_waiting import HOURS, M5, MAIN, _at
from tests.waiting import wait_until

five = test_series_waiting.five  # real BTC/USDT 5m bars and ETH/USDT hours, served by a fake Binance
hours = test_series_waiting.hours
venue = test_series_waiting.venue
SLEEVE = "main:BTC/USDT"
EXAMPLE = f"{REPO / 'examples' / 'strategies' / 'regime_filtered.py'}:RegimeFiltered"
CONFIG = {"cash": 100_000, "strategies": [
    {"id": "main", "strategy": EXAMPLE, "symbols": ["BTC/USDT"], "timeframe": "5m", "allocation": 1.0,
     "params": {"fast": 2, "slow": 5, "regime_symbol": "ETH/USDT", "regime_window": 3},
     "engine": {"max_position": 1.0, "max_drawdown": None, "daily_loss": None, "max_consecutive_losses": None,
                "max_trades_per_day": None}}]}


def test_live_decisions_read_the_hour_a_backtest_reads_even_when_it_comes_late(
        venue: FakeBinance, hours: pd.DataFrame, tmp_path: Path) -> None:
    market = Venue(venue, _at("06:02:30"))
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=venue.url,  # type: ignore[call-arg]
                        http_timeout_s=0.5)
    inner = CcxtFeed(build_exchange(settings, "binance"), {MAIN: "BTC/USDT", HOURS: "ETH/USDT"}, M5, market.clock,
                     poll_s=0.02, warmup=60, tick_s=0.05, backoff_base_s=0.01, backoff_cap_s=0.05, series=[HOURS])
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    feed = WaitingFeed(inner, {MAIN: (HOURS,)}, market.clock, stale_after_bars=3,
                       on_late=lambda text: store.record_event(LATE, text))
    config = PortfolioConfig.model_validate(CONFIG)
    node = Node(store, config, feed, {SLEEVE: MAIN}, PaperBroker(), clock=market.clock, stale_after_bars=3,
                heartbeat_s=0.01, series_keys={SLEEVE: (HOURS,)})
    node.start(fresh=True)
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()

    def processed() -> int | None:
        value = store.cursor(MAIN)
        return None if value is None else ms(pd.Timestamp(value))

    try:
        late_hours = {_at("08:00"), _at("10:00"), _at("11:00")}
        for step in range(1, 73):  # six hours, bar by bar
            now = _at("06:02:30") + step * pd.Timedelta(minutes=5)
            closing = now.floor("5min") - pd.Timedelta(minutes=5)  # the 5m bar closing at this step
            hour = closing + pd.Timedelta(minutes=5) - pd.Timedelta(hours=1)
            held_back = hour in late_hours and closing.minute == 55
            if held_back:  # the hour closing with this bar comes after it
                venue.serve_bars("ETH/USDT", "1h", hours.loc[hours["timestamp"] != hour])
            market.at(now)
            if held_back:
                wait_until(lambda: len(feed.held.get(MAIN, [])) == 1, f"the bar of {closing} held back")
                assert processed() == ms(closing - pd.Timedelta(minutes=5))
                venue.serve_bars("ETH/USDT", "1h", hours)
            wait_until(lambda: processed() == ms(closing), f"the bar of {closing} decided")  # noqa: B023
    finally:
        node.request_stop("test over")
        runner.join()
    assert not store.events(LATE)
    saved = node.decisions[SLEEVE].state()["series"][HOURS]
    assert saved["after"] == ms(_at("11:00"))  # the hour closing with the last bar (11:55, closing 12:00)

    # the backtest's decisions over the same bars (the feed's, from its first), traded from the first live bar
    bars = inner.frames[MAIN].reset_index(drop=True)
    sleeve = sleeves_of(config)[0]
    targets = sleeve.strategy.targets(with_series(bars, M5, {series_of(sleeve.strategy)[0]: inner.frames[HOURS]}))
    first = int(bars.index[bars["timestamp"] == _at("06:00")][0])
    expected = run(bars.iloc[first:].reset_index(drop=True), targets.exposure[first:], targets.reason[first:],
                   targets.reasons, sleeve.config).fills
    stored = sorted((pd.Timestamp(f.at), str(f.side), float(f.qty), float(f.price), f.reason) for f in store.fills())
    assert len(expected) >= 4
    assert stored == [(pd.Timestamp(r.timestamp), str(r.side), float(r.qty), float(r.price), str(r.reason))
                      for r in expected.itertuples(index=False)]
