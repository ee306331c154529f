"""The ccxt live feed on the real ccxt client against a fake Binance: warm-up, new bars, cursors, merged series."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe
from pipeline.settings import Settings
from runtime.feeds.base import LiveFeed
from runtime.feeds.ccxt_feed import CcxtFeed
from tests.fakes.binance_server import FakeBinance
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    BTC_KEY,
    M1,
    MINUTE,
    T0_ROW,
    TICK_S,
    Consumer,
    Recorder,
    Venue,
    ccxt_feed,
    expected,
    got,
    ms,
    t0,
)

bars = feed_helpers.bars  # the real minute bars, the fake Binance serving them and the feeds made by a test
binance = feed_helpers.binance
venue = feed_helpers.venue
made = feed_helpers.made


def test_warm_up_loads_the_closed_bars_before_now_without_the_open_candle(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))

    feed = ccxt_feed(venue, market.clock, tmp_path, made, page_limit=64)

    frame = feed.frames[BTC_KEY]
    assert feed.live is True
    assert str(frame["timestamp"].dtype) == TIMESTAMP_DTYPE
    assert expected(frame, BTC_KEY) == expected(bars.iloc[T0_ROW - 200 : T0_ROW], BTC_KEY)
    assert len(venue.requests_to("klines")) == 4  # 200 bars in pages of 64
    assert feed.history(BTC_KEY, 9).equals(frame.iloc[:10])
    assert feed.expects_bar(BTC_KEY, ms(market.clock.now())) is True


def test_new_bars_arrive_in_order_as_the_clock_moves_and_the_open_candle_never(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    sleep = Recorder()
    feed = ccxt_feed(venue, market.clock, tmp_path, made, sleep, max_rows=205)
    consumer = Consumer(feed, {BTC_KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])}, market.clock, sleep)

    consumer.pull(lambda: consumer.empty >= 2, "two ticks")  # while bar T0_ROW is open, the feed ticks
    consumer.settle()  # and its polls find nothing
    assert consumer.delivered == [] and consumer.empty >= 2
    for step in range(12):
        row = T0_ROW + step
        market.at(bars["timestamp"].iloc[row] + MINUTE - pd.Timedelta(seconds=1))  # one second before its close
        consumer.settle()
        assert len(consumer.delivered) == step
        market.at(bars["timestamp"].iloc[row] + MINUTE + pd.Timedelta(seconds=2))
        consumer.pull_bars(step + 1)

    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 12], BTC_KEY)
    frame = feed.frames[BTC_KEY]  # trimmed between batches to the warm-up, never below it
    assert 200 <= len(frame) <= 205 + 1
    assert frame["timestamp"].iloc[0] > bars["timestamp"].iloc[T0_ROW - 200]
    assert frame["timestamp"].iloc[-1] == bars["timestamp"].iloc[T0_ROW + 11]


def test_a_restart_with_a_cursor_catches_up_exactly_the_missing_bars(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    inside = ccxt_feed(venue, market.clock, tmp_path, made)
    cursor = ms(bars["timestamp"].iloc[T0_ROW - 50])

    first = next(inside.batches({BTC_KEY: cursor}))

    rows = first.rows[BTC_KEY]
    assert list(first.times) == [ms(t) for t in bars["timestamp"].iloc[T0_ROW - 49 : T0_ROW]]
    assert expected(inside.frames[BTC_KEY].iloc[rows], BTC_KEY) == expected(
        bars.iloc[T0_ROW - 49 : T0_ROW], BTC_KEY)


def test_a_cursor_older_than_the_warm_up_loads_history_back_to_it_and_replays_from_there(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    sleep = Recorder()
    feed = ccxt_feed(venue, market.clock, tmp_path, made, sleep, page_limit=100, batch_size=128, max_rows=5000)
    cursor_row = T0_ROW - 700
    consumer = Consumer(feed, {BTC_KEY: ms(bars["timestamp"].iloc[cursor_row])}, market.clock, sleep)

    consumer.pull_bars(699)
    market.at(bars["timestamp"].iloc[T0_ROW] + MINUTE + pd.Timedelta(seconds=1))
    consumer.pull_bars(700)

    assert got(consumer) == expected(bars.iloc[cursor_row + 1 : T0_ROW + 1], BTC_KEY)
    frame = feed.frames[BTC_KEY]  # warm-up history before the cursor too
    assert frame["timestamp"].iloc[0] == bars["timestamp"].iloc[cursor_row + 1 - 200]
    assert frame["timestamp"].is_monotonic_increasing and frame["timestamp"].is_unique


def test_several_series_are_merged_by_time_in_one_batch_per_poll(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    eth = bars.loc[bars["timestamp"].dt.minute % 2 == 0].reset_index(drop=True)  # relabelled; odd minutes missing
    venue.serve_bars("ETH/USDT", "1m", eth)
    market = Venue(venue, t0(bars))
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=venue.url)  # type: ignore[call-arg]
    eth_key = "binance:ETH/USDT:1m"
    feed = CcxtFeed(build_exchange(settings, "binance"), {BTC_KEY: "BTC/USDT", eth_key: "ETH/USDT"}, M1,
                    market.clock, poll_s=1.0, warmup=50, tick_s=TICK_S, sleep=Recorder())
    made.append(feed)
    cursor = ms(bars["timestamp"].iloc[T0_ROW - 1])
    batches = feed.batches({BTC_KEY: cursor, eth_key: cursor})
    assert len(next(batches).times) == 0
    market.at(bars["timestamp"].iloc[T0_ROW + 3] + pd.Timedelta(seconds=1))  # three bars closed at once

    batch = next(b for b in batches if len(b.times))

    times = [ms(t) for t in bars["timestamp"].iloc[T0_ROW : T0_ROW + 3]]
    assert batch.times.tolist() == times
    btc_rows, eth_rows = batch.rows[BTC_KEY], batch.rows[eth_key]
    assert [ms(feed.frames[BTC_KEY]["timestamp"].iloc[r]) for r in btc_rows] == times
    eth_times = [t for t in times if pd.Timestamp(t, unit="ms").minute % 2 == 0]
    assert [ms(feed.frames[eth_key]["timestamp"].iloc[r]) for r in eth_rows if r >= 0] == eth_times
    assert [r < 0 for r in eth_rows] == [t not in eth_times for t in times]


@pytest.mark.parametrize(
    ("symbols", "timeframe", "message"),
    [
        ({"binance:FOO/BAR:1m": "FOO/BAR"}, M1, r"'FOO/BAR' is not listed on binance"),
        ({"binance:BTC/USDT:1m": "not a symbol"}, M1, r"'not a symbol' is not valid"),
        ({"binance:BTC/USDT:5m": "BTC/USDT"}, M1, r"names timeframe '5m'.*delivers 1m"),
        ({"BTC/USDT": "BTC/USDT"}, M1, r"feed key 'BTC/USDT' is not valid"),
        ({BTC_KEY.replace("1m", "10m"): "BTC/USDT"}, Timeframe.parse("10m"), r"timeframe '10m' is not offered"),
    ],
)
def test_bad_configuration_is_a_data_error_naming_it(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, symbols: dict[str, str], timeframe: Timeframe,
    message: str,
) -> None:
    market = Venue(venue, t0(bars))
    exchange = build_exchange(Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                       ccxt_rest_url=venue.url), "binance")

    with pytest.raises(DataError, match=message):
        CcxtFeed(exchange, symbols, timeframe, market.clock, warmup=10)
    assert venue.requests_to("klines") == []
