"""The ccxt.pro websocket feed against local fakes of Binance's kline stream and REST API, driven by the real
ccxt.pro client: closed candles only, a dropped connection mid-candle, a silent connection, a reconnect that skips
bars, duplicate and out-of-order messages — and afterwards the delivered bars equal the REST history exactly.

Nothing here waits on wall time: a test waits for what the feed has done (a message cached, polls completed,
bars delivered, a connection subscribed). Silence is judged on the feed's ``monotonic`` clock, which a test moves
on by the seconds it scripts."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.data.sources.ccxt_stream import build_ws_exchange, point_ws_at
from pipeline.domain import DataError
from pipeline.settings import Settings
from runtime.feeds.base import LiveFeed
from runtime.feeds.ccxt_ws import RECONNECT, CcxtWsFeed, default_silence_s
from tests.fakes.binance_server import FakeBinance
from tests.fakes.binance_stream import FakeBinanceStream
from tests.runtime.feed_helpers import (
    BASE_S,
    BTC_KEY,
    CAP_S,
    M1,
    MINUTE,
    T0_ROW,
    TICK_S,
    Consumer,
    Recorder,
    Venue,
    bars,
    binance,
    expected,
    got,
    made,
    ms,
    t0,
    venue,
)
from tests.waiting import wait_until

__all__ = ["bars", "binance", "made", "venue"]  # fixtures

SYMBOL, INTERVAL = "BTC/USDT", "1m"


class Monotonic:
    """The feed's clock of elapsed seconds: real time plus the seconds a test has skipped."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


@pytest.fixture
def stream() -> Iterator[FakeBinanceStream]:
    with FakeBinanceStream() as server:
        yield server


def ws_feed(server: FakeBinance, stream: FakeBinanceStream, clock: FixedClock, tmp_path: Path,
            made: list[LiveFeed], monotonic: Monotonic, **options: Any) -> CcxtWsFeed:
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=server.url,  # type: ignore[call-arg]
                        ccxt_ws_url=stream.url, http_timeout_s=0.5)
    values: dict[str, Any] = {"poll_s": 0.05, "warmup": 200, "tick_s": TICK_S, "backoff_base_s": BASE_S,
                              "backoff_cap_s": CAP_S, "monotonic": monotonic}
    values.update(options)
    feed = CcxtWsFeed(build_exchange(settings, "binance"), build_ws_exchange(settings, "binance"),
                      {BTC_KEY: SYMBOL}, M1, clock, **values)
    made.append(feed)
    return feed


class Script:
    """Sends candles over the fake stream and waits until the feed has taken each one in."""

    def __init__(self, stream: FakeBinanceStream, feed: CcxtWsFeed, consumer: Consumer, frame: pd.DataFrame) -> None:
        self.stream = stream
        self.feed = feed
        self.consumer = consumer
        self.frame = frame

    def send(self, how: str, row: int) -> None:
        """Send ``how`` (open_candle, update_candle or close_candle) of the bar at ``row``, and wait until the
        feed holds those values (or has delivered that bar already: then the message changes nothing)."""
        getattr(self.stream, how)(SYMBOL, INTERVAL, self.frame.iloc[row])
        _, opened, values = self.stream.sent[-1]

        def taken() -> bool:
            if self.consumer.delivered and self.consumer.delivered[-1][1] >= opened:
                return True
            return self.feed.cache.latest(BTC_KEY, opened) == (opened, *values)

        self.consumer.pull(taken, f"the stream's {how} of row {row} taken in")

    def settle(self) -> None:
        """Take batches until the worker has completed two more polls, then one more batch."""
        target = self.feed.polls + 2
        self.consumer.pull(lambda: self.feed.polls >= target, "two more polls")
        self.consumer.take(next(self.consumer.batches))


class Started:
    """A websocket feed on the fakes at the first test bar, its consumer from the bar before, the script that sends
    candles, and the notes the feed gave (``events``)."""

    def __init__(self, venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path,
                 made: list[LiveFeed], monotonic: Monotonic | None = None, **options: Any) -> None:
        self.market = Venue(venue, t0(bars))
        self.monotonic = monotonic or Monotonic()
        self.feed = ws_feed(venue, stream, self.market.clock, tmp_path, made, self.monotonic, **options)
        self.events: list[tuple[str, str]] = []
        self.feed.on_event = lambda kind, text: self.events.append((kind, text))
        self.consumer = Consumer(self.feed, {BTC_KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])}, self.market.clock,
                                 Recorder())
        self.script = Script(stream, self.feed, self.consumer, bars)


def test_the_stream_delivers_closed_candles_once_in_order_through_drops_silence_gaps_and_repeats(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    run = Started(venue, stream, bars, tmp_path, made)
    market, monotonic, feed, events, consumer, script = (run.market, run.monotonic, run.feed, run.events,
                                                         run.consumer, run.script)

    def at(row: int, seconds: float) -> None:
        market.at(bars["timestamp"].iloc[row] + pd.Timedelta(seconds=seconds))

    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "the feed subscribed to the kline stream")
    rest_asked = len(venue.requests_to("klines"))

    # closed candles come from the stream alone, each once a later candle has started; the open one never
    row = T0_ROW
    at(row, 1)
    script.send("open_candle", row)
    for row in range(T0_ROW, T0_ROW + 5):
        at(row, 20)
        script.send("update_candle", row)
        script.settle()
        assert len(consumer.delivered) == row - T0_ROW  # the open candle is not delivered
        at(row, 59.9)
        script.send("close_candle", row)  # its final update: still no later candle
        script.settle()
        assert len(consumer.delivered) == row - T0_ROW
        at(row + 1, 0.5)
        script.send("open_candle", row + 1)
        consumer.pull_bars(row - T0_ROW + 1)
    assert len(venue.requests_to("klines")) == rest_asked  # REST was not needed

    # a connection dropped mid-candle: what was sent of that candle on it is not trusted
    row = T0_ROW + 5
    at(row, 30)
    script.send("update_candle", row)
    assert stream.drop_connections() == 1
    wait_until(lambda: feed.reconnects >= 1, "the feed reconnecting")
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0 and stream.connections == 2,
                  "the second connection subscribed")
    at(row + 1, 0.5)
    script.send("close_candle", row)
    script.send("open_candle", row + 1)
    consumer.pull_bars(row - T0_ROW + 1)

    # 90 s of silence: the connection is torn down and rebuilt, and the bar it did not close comes from REST
    row = T0_ROW + 6
    at(row, 91)
    monotonic.skipped += 90
    consumer.pull(lambda: stream.connections == 3 and stream.subscribers(SYMBOL, INTERVAL) > 0,
                  "a third connection after the silence")
    consumer.pull_bars(row - T0_ROW + 1)
    assert len(venue.requests_to("klines")) > rest_asked

    # a reconnect after which the stream skips 5 bars: they come from REST before the stream's next candle
    row = T0_ROW + 7
    at(row, 40)
    script.send("update_candle", row)
    stream.drop_connections()
    consumer.pull(lambda: stream.connections == 4 and stream.subscribers(SYMBOL, INTERVAL) > 0,
                  "a fourth connection")
    row = T0_ROW + 13  # rows +7 (open at the drop) and +8 .. +12 never come over the stream
    at(row, 5)  # REST gives bars that closed at least grace_s (3 s) ago
    script.send("open_candle", row)
    consumer.pull_bars(row - T0_ROW)

    # duplicate and out-of-order messages change nothing
    at(row, 30)
    script.send("update_candle", row)
    script.send("update_candle", row)  # a duplicate
    at(row, 59.9)
    script.send("close_candle", row)
    stream.update_candle(SYMBOL, INTERVAL, bars.iloc[row])  # an older update arriving late
    stream.open_candle(SYMBOL, INTERVAL, bars.iloc[T0_ROW + 9])  # a stale candle long delivered
    at(row + 1, 0.5)
    script.send("open_candle", row + 1)
    consumer.pull_bars(row - T0_ROW + 1)
    script.send("close_candle", row)  # the closed candle once more, after the next one started
    script.send("open_candle", row + 1)
    at(row + 1, 59.9)
    script.send("close_candle", row + 1)
    at(row + 2, 0.5)
    script.send("open_candle", row + 2)
    consumer.pull_bars(row - T0_ROW + 2)
    script.settle()

    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 15], BTC_KEY)  # exactly the REST history
    assert feed.reconnects == 3
    assert [kind for kind, _ in events] == [RECONNECT] * 3
    assert re.search(r"silent for 9\d s", events[1][1])
    assert feed.cache.size(BTC_KEY) <= 2  # delivered candles are forgotten


def test_bars_a_reconnect_skipped_come_from_rest_before_the_streams_next_candle(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    run = Started(venue, stream, bars, tmp_path, made, grace_s=3600.0)  # REST only for gaps
    market, consumer, script = run.market, run.consumer, run.script
    warmed = len(venue.requests_to("klines"))
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "subscribed")
    market.at(bars["timestamp"].iloc[T0_ROW] + MINUTE * 6 + pd.Timedelta(seconds=1))
    script.send("open_candle", T0_ROW + 6)  # the stream's first candle: 6 bars later
    script.settle()
    assert consumer.delivered == []  # the candle open now is not delivered, and nothing before it yet
    market.at(bars["timestamp"].iloc[T0_ROW] + MINUTE * 7 + pd.Timedelta(seconds=1))
    script.send("close_candle", T0_ROW + 6)
    script.send("open_candle", T0_ROW + 7)
    consumer.pull_bars(7)
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 7], BTC_KEY)
    assert len(venue.requests_to("klines")) > warmed  # the six bars before the stream's came from REST


def test_a_gap_is_not_skipped_when_rest_failed_once_before_answering(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    run = Started(venue, stream, bars, tmp_path, made, poll_s=5.0)  # retries come sooner than the next ask
    market, consumer, script = run.market, run.consumer, run.script
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "subscribed")
    script.send("open_candle", T0_ROW + 6)
    script.send("close_candle", T0_ROW + 6)
    market.at(bars["timestamp"].iloc[T0_ROW + 7] + pd.Timedelta(seconds=30))  # well past the grace of the gap
    venue.fail_next(500)  # the first REST request for the gap fails; the retry a moment later must ask again
    script.send("open_candle", T0_ROW + 7)
    consumer.pull_bars(7)
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 7], BTC_KEY)


def test_a_refused_handshake_backs_off_and_the_feed_recovers_when_the_venue_accepts(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    stream.refuse_connections(status=429, retry_after=0.05)
    feed = ws_feed(venue, stream, market.clock, tmp_path, made, Monotonic())
    consumer = Consumer(feed, {BTC_KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])}, market.clock, Recorder())
    consumer.pull(lambda: stream.refused >= 3, "three refused handshakes")
    assert feed.reconnects >= 3 and stream.connections == 0
    stream.refuse_connections(False)
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "subscribed once the venue accepts")
    script = Script(stream, feed, consumer, bars)
    market.at(bars["timestamp"].iloc[T0_ROW] + pd.Timedelta(seconds=59))
    script.send("close_candle", T0_ROW)
    market.at(bars["timestamp"].iloc[T0_ROW + 1] + pd.Timedelta(seconds=1))
    script.send("open_candle", T0_ROW + 1)
    consumer.pull_bars(1)
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 1], BTC_KEY)


def test_silence_limit_scales_with_the_timeframe_and_bad_options_are_refused(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    from pipeline.domain import Timeframe

    assert [default_silence_s(Timeframe.parse(t)) for t in ("1m", "5m", "1h", "1d")] == [60, 300, 300, 300]
    market = Venue(venue, t0(bars))
    with pytest.raises(DataError, match="silence_s 0 is not valid"):
        ws_feed(venue, stream, market.clock, tmp_path, made, Monotonic(), silence_s=0)


def test_the_runtime_wires_the_websocket_feed_when_asked_and_knows_exchanges_without_streamed_candles(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    import ccxt.pro

    from runtime.feeds.ccxt_feed import CcxtFeed
    from runtime.wiring import ccxt_live_feed

    now = pd.Timestamp(time.time(), unit="s", tz="UTC").floor("min")  # the venue serves bars up to its wall clock
    served = bars.iloc[:300].copy()
    served["timestamp"] = now - MINUTE * (290 - pd.RangeIndex(300).to_numpy())  # ten more than now
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=venue.url,  # type: ignore[call-arg]
                        ccxt_ws_url=stream.url)
    common = {"poll_s": 0.05, "warmup": 100}
    venue.serve_bars(SYMBOL, INTERVAL, served)
    try:
        streamed = ccxt_live_feed(settings, "binance", {BTC_KEY: SYMBOL}, M1, True, common)
        polled = ccxt_live_feed(settings, "binance", {BTC_KEY: SYMBOL}, M1, False, common)
    finally:
        venue.serve_bars(SYMBOL, INTERVAL, bars)  # the module's venue serves its bars again for the next test
    made += [streamed, polled]  # type: ignore[list-item]

    assert isinstance(streamed, CcxtWsFeed) and streamed.ws.urls["api"]["ws"]["spot"] == stream.url
    assert streamed.ws.apiKey in ("", None)  # public candles: the stream gets no keys
    assert type(polled) is CcxtFeed
    assert len(streamed.frames[BTC_KEY]) == 100  # warmed up through REST
    without = sorted(set(ccxt.exchanges) - set(ccxt.pro.exchanges))
    assert without and build_ws_exchange(settings, without[0]) is None
    with pytest.raises(ValueError, match=r"ws(://)? or wss"):  # refused by the settings, or where it is used
        build_ws_exchange(Settings(_env_file=None, ccxt_ws_url="http://127.0.0.1:1/ws"), "binance")  # type: ignore[call-arg]
    with pytest.raises(DataError, match="is not valid: use a ws:// or wss:// URL"):
        point_ws_at(streamed.ws, "http://127.0.0.1:1/ws")


def test_a_connection_is_rebuilt_once_a_day_without_backing_off_and_bars_go_on(
    venue: FakeBinance, stream: FakeBinanceStream, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    run = Started(venue, stream, bars, tmp_path, made, backoff_base_s=30.0, backoff_cap_s=60.0)
    market, monotonic, events, consumer = run.market, run.monotonic, run.events, run.consumer
    consumer.pull(lambda: stream.subscribers(SYMBOL, INTERVAL) > 0, "subscribed")
    monotonic.skipped += 86_400
    consumer.pull(lambda: stream.connections == 2 and stream.subscribers(SYMBOL, INTERVAL) > 0,
                  "a new connection after a day (no 30 s backoff: an aged connection is not a failure)")
    market.at(bars["timestamp"].iloc[T0_ROW] + pd.Timedelta(seconds=59))
    run.script.send("close_candle", T0_ROW)
    market.at(bars["timestamp"].iloc[T0_ROW + 1] + pd.Timedelta(seconds=1))
    run.script.send("open_candle", T0_ROW + 1)
    consumer.pull_bars(1)
    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 1], BTC_KEY)
    assert [kind for kind, _ in events] == [RECONNECT] and re.search(r"recycled after 864\d\d s", events[0][1])
    assert "reconnecting in" not in events[0][1]  # at once
