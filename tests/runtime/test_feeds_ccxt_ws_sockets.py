"""The websocket feed and what ccxt.pro does underneath it: a venue's close right behind an update is a reconnect
like any other, and the candle open at it is not trusted (the feed also watches for ccxt replacing a socket
without a word, which happens when the close comes while no watcher waits: a rare timing no test can force);
candles ccxt still holds after they were delivered are not news (they would keep a silent connection looking
alive)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from runtime.feeds.base import LiveFeed
from runtime.feeds.candle_cache import CandleCache
from runtime.feeds.ccxt_ws import RECONNECT
from tests.fakes.binance_server import FakeBinance
from tests.fakes.binance_stream import FakeBinanceStream
from tests.runtime.feed_helpers import BTC_KEY, MINUTE, T0_ROW, bars, binance, expected, got, made, venue
from tests.runtime.test_feeds_ccxt_ws import INTERVAL, SYMBOL, Started

__all__ = ["bars", "binance", "made", "venue"]  # fixtures


@pytest.fixture
def stream() -> Iterator[FakeBinanceStream]:
    with FakeBinanceStream() as server:
        yield server


def test_a_close_right_behind_an_update_is_a_reconnect_and_the_candle_open_at_it_is_not_trusted(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    run = Started(venue, stream, bars, tmp_path, made)
    market, consumer = run.market, run.consumer
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "subscribed")
    opened = bars["timestamp"].iloc[T0_ROW]
    market.at(opened + pd.Timedelta(seconds=1))
    run.script.send("open_candle", T0_ROW)
    market.at(opened + pd.Timedelta(seconds=30))
    stream.update_then_drop(SYMBOL, INTERVAL, bars.iloc[T0_ROW])  # an update, the venue's close right behind it

    consumer.pull(lambda: any(kind == RECONNECT for kind, _ in run.events), "the close taken as a reconnect")
    assert "connection lost" in next(text for kind, text in run.events if kind == RECONNECT)
    market.at(opened + MINUTE + pd.Timedelta(seconds=5))  # the candle's close is overdue: REST gives it
    consumer.pull_bars(1)
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 1], BTC_KEY)  # the whole bar, not the update


def test_candles_delivered_already_are_not_news_when_the_stream_repeats_them() -> None:
    cache = CandleCache([BTC_KEY])
    first, second = (0, 1.0, 2.0, 0.5, 1.5, 10.0), (60_000, 1.5, 1.6, 1.4, 1.5, 3.0)
    assert cache.note(BTC_KEY, [first, second], epoch=1)
    assert cache.closed_after(BTC_KEY, -1) == [first]
    cache.forget_through(BTC_KEY, 0)  # delivered

    assert not cache.note(BTC_KEY, [first, second], epoch=1)  # ccxt's own cache repeats both: nothing new
    assert cache.latest(BTC_KEY, 0) is None and cache.size(BTC_KEY) == 1
    assert cache.note(BTC_KEY, [(60_000, 1.5, 1.7, 1.4, 1.6, 4.0)], epoch=1)  # the open candle moving on is news
