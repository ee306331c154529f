"""A websocket feed asked of an exchange whose candles ccxt.pro does not stream: the runtime polls REST instead,
says so once as the runtime event ``feed_fallback``, and closed bars keep coming, each once and in order.

The feed is built as the runtime builds it (``runtime.wiring.ccxt_live_feed``) for ccxt's ``coinsph``, which
ccxt.pro does not cover, against the local fake of its REST API (the fake Binance under Coins.ph's paths); the
note is recorded in a real state store as ``runtime.wiring.wire`` records a live feed's notes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.sources.ccxt_stream import build_ws_exchange
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.feeds.base import LiveFeed
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.wiring import ccxt_live_feed
from tests.fakes.coinsph_server import FakeCoinsph
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    M1,
    MINUTE,
    POLL_S,
    T0_ROW,
    TICK_S,
    Consumer,
    Recorder,
    Venue,
    expected,
    got,
    ms,
    t0,
)

bars = feed_helpers.bars  # 3000 real BTC/USDT minute bars
made = feed_helpers.made

EXCHANGE, SYMBOL = "coinsph", "BTC/USDT"
KEY = f"{EXCHANGE}:{SYMBOL}:1m"
FALLBACK = "feed_fallback"


@pytest.fixture
def coinsph(bars: pd.DataFrame) -> Iterator[FakeCoinsph]:
    with FakeCoinsph() as server:
        server.serve_bars(SYMBOL, "1m", bars)
        yield server


def test_an_exchange_without_streamed_candles_is_polled_through_rest_and_the_fallback_is_recorded_once(
    coinsph: FakeCoinsph, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    import ccxt
    import ccxt.pro

    assert EXCHANGE in ccxt.exchanges and EXCHANGE not in ccxt.pro.exchanges  # no websocket candles to take
    market = Venue(coinsph, t0(bars))
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=coinsph.url,  # type: ignore[call-arg]
                        http_timeout_s=0.5, feed_poll_seconds=POLL_S)
    assert build_ws_exchange(settings, EXCHANGE) is None
    recorder = Recorder()
    common = {"poll_s": POLL_S, "warmup": 200, "tick_s": TICK_S, "sleep": recorder}
    feed = ccxt_live_feed(settings, EXCHANGE, {KEY: SYMBOL}, M1, True, common, clock=market.clock)
    assert isinstance(feed, LiveFeed)
    made.append(feed)
    assert type(feed) is CcxtFeed and len(feed.frames[KEY]) == 200  # REST polling, warmed up through REST
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    feed.on_event = lambda kind, text: store.record_event(kind, text)  # as the runtime records a feed's notes
    warmed = len(coinsph.requests_to("klines"))

    consumer = Consumer(feed, {KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])}, market.clock, recorder)
    for closed in range(1, 4):  # three bars close, one after the other
        market.at(bars["timestamp"].iloc[T0_ROW] + closed * MINUTE + pd.Timedelta(seconds=1))
        consumer.pull_bars(closed)
    consumer.settle()

    try:
        events = store.events()
    finally:
        store.close()
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 3], KEY)  # each once, in order, none missing
    assert len(coinsph.requests_to("klines")) > warmed
    assert [event.kind for event in events] == [FALLBACK]  # said once, however many polls followed
    assert events[0].detail == (f"{EXCHANGE} streams no candles in ccxt.pro: bars are polled through REST every "
                                f"{POLL_S:g} s instead of the websocket")
