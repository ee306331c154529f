"""Live feeds under venue faults: 429, 5xx, timeouts and dropped connections, a venue down, a stream that drops."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.retry import DEFAULT_JITTER
from runtime.feeds import FeedError
from runtime.feeds.base import LiveFeed
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.alpaca_stream import FakeAlpacaStream
from tests.fakes.binance_server import FakeBinance
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    AAPL_KEY,
    BTC_KEY,
    T0_ROW,
    Consumer,
    Recorder,
    Venue,
    alpaca_feed,
    ccxt_feed,
    expected,
    got,
    monday,
    ms,
    subscribed,
    t0,
)

bars = feed_helpers.bars  # the real minute bars, the fake Binance, the fake Alpaca REST API and stream
binance = feed_helpers.binance
venue = feed_helpers.venue
sessions = feed_helpers.sessions
rest = feed_helpers.rest
stream = feed_helpers.stream
made = feed_helpers.made


def test_429_500_503_timeouts_and_dropped_connections_are_survived_with_backoff(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed],
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = Venue(venue, t0(bars))
    sleep = Recorder()
    feed = ccxt_feed(venue, market.clock, tmp_path, made, sleep)
    consumer = Consumer(feed, {BTC_KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])}, market.clock, sleep)
    consumer.settle()  # live: polling a venue that answers
    asked = len(venue.requests_to("klines"))
    for status in (429, 500, 503):
        venue.fail_next(status)
    venue.fail_next(delay_s=1.0)  # longer than the client's 0.5 s timeout
    venue.fail_next(drop=True)
    venue.fail_next(418)

    with caplog.at_level(logging.WARNING, logger="runtime.feeds"):
        market.at(bars["timestamp"].iloc[T0_ROW + 3] + pd.Timedelta(seconds=5))
        consumer.pull_bars(3)
        consumer.settle()  # nothing more comes: no bar twice, no further backoff

    assert got(consumer) == expected(bars.iloc[T0_ROW : T0_ROW + 3], BTC_KEY)  # none lost, none twice
    # exponential, capped, shortened by at most the jitter; the 429 and the 418 wait the venue's Retry-After (1 s)
    waits = sleep.backoffs()
    assert len(waits) == 6 and waits[0] == waits[5] == 1.0, waits
    for waited, backoff in zip(waits[1:5], [0.02, 0.04, 0.08, 0.08], strict=True):
        assert backoff * (1 - DEFAULT_JITTER) <= waited <= backoff, waits
    statuses = [r.status for r in venue.requests_to("klines")][asked:]
    first = statuses.index(429)  # a poll under way as the faults were set was answered
    assert statuses[:first] in ([], [200])
    assert statuses[first : first + 3] == [429, 500, 503] and set(statuses[first + 6 :]) == {200}
    assert venue.pending_faults == 0
    assert "polling failed" in caplog.text


def test_venue_down_at_start_is_a_feed_error_naming_the_series(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    venue.fail_next(503, times=3)

    with pytest.raises(FeedError, match=r"BTC/USDT.*after 3 attempts"):
        ccxt_feed(venue, market.clock, tmp_path, made, warmup_attempts=3)


def test_after_the_stream_drops_the_feed_reconnects_and_backfills_through_rest(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path,
    made: list[LiveFeed],
) -> None:
    clock = FixedClock(monday(60, 30))
    sleep = Recorder()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=sleep)
    warm_up_requests = len(rest.bar_requests())
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, sleep)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    stream.publish_bar("AAPL", sessions.iloc[450])
    clock.set(monday(61, 1))
    consumer.pull_bars(1)

    stream.refuse_connections()
    assert stream.drop_connections() == 1
    for row in range(451, 455):  # published while the client is away: lost on the stream
        assert stream.publish_bar("AAPL", sessions.iloc[row]) == 0
    clock.set(monday(62, 3))  # the 10:31 bar closed 3 s ago: within the grace, no request yet
    consumer.settle()
    assert len(consumer.delivered) == 1
    assert len(rest.bar_requests()) == warm_up_requests
    rest.fail_next(500)
    rest.fail_next(429)
    clock.set(monday(65, 1))  # the 10:31 bar is overdue
    consumer.pull_bars(5)
    consumer.pull(lambda: stream.refused >= 1, "the feed's stream to try to reconnect")
    stream.refuse_connections(False)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe again")
    stream.publish_bar("AAPL", sessions.iloc[455])
    clock.set(monday(66, 1))
    consumer.pull_bars(6)
    consumer.settle()

    assert got(consumer) == expected(sessions.iloc[450:456], AAPL_KEY)  # each once, in order
    assert stream.connections == 2 and stream.refused >= 1
    backfills = rest.bar_requests()[warm_up_requests:]
    assert len(backfills) == 3  # 500, 429, then the backfill
    assert backfills[-1].params["start"].startswith("2024-07-29T14:31:00")
