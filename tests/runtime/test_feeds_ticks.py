"""Live feed ticks by the feed's own monotonic clock, and stops that end the batches and the worker promptly."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from pipeline.clock import FixedClock
from pipeline.domain import empty_bars, epoch_ms
from runtime.feeds import ReplayFeed
from runtime.feeds.base import LiveFeed, Update
from runtime.feeds.sample_feed import SampleFeed
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.binance_server import FakeBinance
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    BASE_S,
    BTC_KEY,
    CAP_S,
    ETH_KEY,
    M1,
    POLL_S,
    START,
    T0_ROW,
    Recorder,
    Venue,
    alpaca_feed,
    ccxt_feed,
    monday,
    ms,
    t0,
)
from tests.waiting import wait_until

bars = feed_helpers.bars  # the real minute bars, the fake Binance, the fake Alpaca REST API and the feeds made
binance = feed_helpers.binance
venue = feed_helpers.venue
sessions = feed_helpers.sessions
rest = feed_helpers.rest
made = feed_helpers.made


class FeedClock:
    """A fake ``monotonic`` for a feed: it answers ``times`` in turn and counts the readings.

    Past the last time it stands still (``hold``) or fails the test: the feed read its clock more often than
    the test expected.
    """

    def __init__(self, *times: float, hold: bool = False) -> None:
        self.times = times
        self.hold = hold
        self.reads = 0

    def __call__(self) -> float:
        if self.reads >= len(self.times) and not self.hold:
            raise AssertionError(f"the feed read its clock a {self.reads + 1}th time; the test expected "
                                 f"{len(self.times)} readings")
        value = self.times[min(self.reads, len(self.times) - 1)]
        self.reads += 1
        return value


QUIET_TICK_S = 0.0625
"""The tick of ``QuietFeed`` (a power of two, so that the scripted clock's differences are exact)."""


class QuietFeed(LiveFeed):
    """A live feed over a venue without bars: its worker polls and finds nothing, so it yields only ticks."""

    venue = "quiet"

    def __init__(self, monotonic: FeedClock) -> None:
        super().__init__([BTC_KEY, ETH_KEY], M1, FixedClock(START), poll_s=POLL_S, warmup=1, tick_s=QUIET_TICK_S,
                         backoff_base_s=BASE_S, backoff_cap_s=CAP_S, sleep=None, max_rows=None, batch_size=8192,
                         warmup_attempts=1, monotonic=monotonic)

    def _fetch(self, key: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        return empty_bars()

    def _warm_up_start(self, key: str, now: int) -> int:
        return now

    def _poll(self, known: dict[str, int]) -> Update:
        return {}


def test_a_tick_comes_once_tick_s_has_passed_on_the_feeds_clock_and_not_before(made: list[LiveFeed]) -> None:
    # the feed reads its clock as it starts waiting for bars, then once after each wait for its worker
    monotonic = FeedClock(
        100.0,  # 1: the start
        100.03125,  # 2: half a tick later: nothing
        100.0625,  # 3: a tick has passed: a tick
        100.09375,  # 4: nothing
        100.125,  # 5: a tick after the last one: a tick
        100.3125,  # 6: a late look, three ticks after the last one: one tick
        100.34375,  # 7: half a tick after the late tick: nothing (the next is due a tick after it)
        100.375,  # 8: a tick
    )
    feed = QuietFeed(monotonic)
    made.append(feed)
    batches = feed.batches({BTC_KEY: None, ETH_KEY: None})

    for reads in (3, 5, 6, 8):
        batch = next(batches)
        assert batch.empty and sorted(batch.rows) == [BTC_KEY, ETH_KEY]
        assert all(len(rows) == 0 for rows in batch.rows.values())
        assert monotonic.reads == reads  # the tick came at that reading of the clock, not at an earlier one
    feed.stop()

    assert list(batches) == []  # nothing after the stop ...
    assert monotonic.reads == 8  # ... which ended the batches before the clock was read again
    worker = feed._worker
    assert worker is not None
    wait_until(lambda: not worker.is_alive(), "the feed's worker to end")


def test_a_stop_from_another_thread_ends_the_batches_at_the_next_look(made: list[LiveFeed]) -> None:
    monotonic = FeedClock(100.0, hold=True)  # the feed's clock stands still: no tick falls due
    feed = QuietFeed(monotonic)
    made.append(feed)
    batches = feed.batches({BTC_KEY: None, ETH_KEY: None})
    reads_at_stop: list[int] = []

    def stop_while_waiting() -> None:
        wait_until(lambda: monotonic.reads >= 3 or feed.stopped, "the feed to wait twice for bars")
        feed.stop()
        reads_at_stop.append(monotonic.reads)

    stopper = threading.Thread(target=stop_while_waiting, name="stopper", daemon=True)
    stopper.start()

    assert list(batches) == []  # only the stop could end the batches, and nothing was yielded after it
    stopper.join()
    assert monotonic.reads <= reads_at_stop[0] + 1  # seen right after the wait the feed was in
    worker = feed._worker
    assert worker is not None
    wait_until(lambda: not worker.is_alive(), "the feed's worker to end")


def test_stop_is_prompt_while_the_venue_fails_and_the_feed_backs_off(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    feed = ccxt_feed(venue, market.clock, tmp_path, made, sleep=None, backoff_base_s=5.0, backoff_cap_s=30.0)
    venue.fail_next(500, times=100)
    market.at(bars["timestamp"].iloc[T0_ROW + 2])
    batches = feed.batches({BTC_KEY: ms(bars["timestamp"].iloc[T0_ROW - 1])})
    assert len(next(batches).times) == 0
    wait_until(lambda: feed._worker is not None and [r for r in venue.requests_to("klines") if r.status == 500],
               "the worker's first failed poll")  # it now backs off for 5 s

    asked = len(venue.requests_to("klines"))
    feed.stop()
    assert list(batches) == [] or all(len(b.times) == 0 for b in batches)
    worker = feed._worker
    assert worker is not None
    wait_until(lambda: not worker.is_alive(), "the feed's worker to end")
    assert len(venue.requests_to("klines")) == asked  # the stop ended the back-off: no request after it
    assert len([r for r in venue.requests_to("klines") if r.status == 500]) <= 2  # one failure, then the back-off


def test_every_live_feed_ticks_by_the_monotonic_clock_it_is_given(
    venue: FakeBinance, rest: AlpacaServer, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    clocks = [FeedClock(100.0, 100.03125, 100.0625, hold=True) for _ in range(3)]  # a tick at the third reading
    market = Venue(venue, t0(bars))  # no venue moves: no bar closes, only ticks come
    sample = SampleFeed({"sample:BTC/USDT:1m": "BTC/USDT"}, M1, FixedClock(START), seed=7, warmup=10,
                        tick_s=QUIET_TICK_S, sleep=Recorder(), monotonic=clocks[2])
    made.append(sample)
    feeds = [
        ccxt_feed(venue, market.clock, tmp_path, made, tick_s=QUIET_TICK_S, monotonic=clocks[0]),
        alpaca_feed(rest, None, FixedClock(monday(60, 30)), tmp_path, made, tick_s=QUIET_TICK_S, monotonic=clocks[1]),
        sample,
    ]

    for feed, monotonic in zip(feeds, clocks, strict=True):
        assert feed.monotonic is monotonic
        batches = feed.batches(dict.fromkeys(feed.keys))
        assert next(batches).empty, feed.venue
        assert monotonic.reads == 3, feed.venue  # the tick came when the given clock said tick_s had passed
        feed.stop()
        assert list(batches) == []


def test_replay_feed_is_not_live_expects_bars_and_stops(bars: pd.DataFrame) -> None:
    feed = ReplayFeed({BTC_KEY: bars.iloc[:100]}, M1, batch_size=10)
    assert feed.live is False and feed.expects_bar(BTC_KEY, 0) is True
    batches = feed.batches({BTC_KEY: None})

    first = next(batches)
    feed.stop()

    assert list(first.rows[BTC_KEY]) == list(range(10))
    assert list(batches) == []
    assert epoch_ms(bars["timestamp"].iloc[:10]).tolist() == first.times.tolist()
