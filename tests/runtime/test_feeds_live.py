"""The live feeds, driven through the real ccxt and alpaca-py clients against local fakes of the venues.

ccxt: a fake Binance (REST klines) serves real BTC/USDT minute bars; its clock and the feed's clock move
together, so the candle containing "now" is served as the still-open candle. The two-series test also serves
the BTC/USDT bars of even minutes as ETH/USDT (the shared data has no ETH/USDT minute bars).

Alpaca: a fake of the historical bars API (REST) and a fake of the market-data stream (websocket, msgpack).
There are no real US stock minute bars in the shared data, so real BTC/USDT minute bars are relabelled as two
NYSE regular sessions (Friday 2024-07-26 and Monday 2024-07-29, 09:30-16:00 New York).

No test here bounds or spends wall time: a test waits for what the feed has done (bars delivered, polls
completed, a stream subscribed, a warning logged), through ``tests.waiting.wait_until``, and the ticks and the
stop of ``LiveFeed`` are driven by a fake ``monotonic`` clock. The worker's ``sleep`` (``Recorder``) records its
waits and paces the worker; nothing synchronises on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alpaca.data.live.stock import StockDataStream

from pipeline.clock import FixedClock
from pipeline.data.sources.alpaca_source import make_client
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, empty_bars, epoch_ms
from pipeline.retry import DEFAULT_JITTER
from pipeline.settings import Settings
from runtime.feeds import Batch, FeedError, ReplayFeed
from runtime.feeds.alpaca_feed import AlpacaFeed, alpaca_stream
from runtime.feeds.base import LiveFeed, Update
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.feeds.sample_feed import SampleFeed
from tests.conftest import shared_file
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.alpaca_stream import FakeAlpacaStream
from tests.fakes.binance_server import FakeBinance
from tests.waiting import wait_until

M1 = Timeframe.parse("1m")
MINUTE = pd.Timedelta(minutes=1)
BTC_KEY = "binance:BTC/USDT:1m"
ETH_KEY = "binance:ETH/USDT:1m"
AAPL_KEY = "alpaca:AAPL:1m"
START = pd.Timestamp("2024-07-29", tz="UTC")
T0_ROW = 1500
"""The bar open at the start of the ccxt tests (the feed's clock is 30 s into it)."""
POLL_S = 0.03
BASE_S, CAP_S = 0.01, 0.08
TICK_S = 0.1
FRIDAY_OPEN = pd.Timestamp("2024-07-26 13:30", tz="UTC")
MONDAY_OPEN = pd.Timestamp("2024-07-29 13:30", tz="UTC")


def ms(stamp: pd.Timestamp) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """3000 contiguous real BTC/USDT minute bars from 2024-07-29 00:00 UTC."""
    end = START + 3000 * MINUTE
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                            filters=[("timestamp", ">=", START), ("timestamp", "<", end)])
    assert len(frame) == 3000 and frame["timestamp"].diff().max() == MINUTE
    return frame.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ helpers
class Recorder:
    """A feed's ``sleep``: records each wait and waits briefly for real, so that the worker does not spin.

    The worker waits ``poll_s`` after each poll, once it has handed over what the poll found; every other wait
    is a backoff of the retry policy.
    """

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        time.sleep(min(seconds, 0.03))  # pacing the feed's worker only: no test waits on it

    def backoffs(self) -> list[float]:
        return [w for w in self.waits if w != POLL_S]

    def polls(self) -> int:
        """How many polls the worker has completed."""
        return sum(1 for w in self.waits if w == POLL_S)


class Consumer:
    """Pulls batches from a feed like the node does and records every delivered bar with the clock then.

    It never waits for a length of time: it takes batches until the feed has done what the test waits for
    (``tests.waiting.wait_until``); the feed's ticks bring it back to look while no bar comes.
    """

    def __init__(self, feed: LiveFeed, after: dict[str, int | None], clock: FixedClock, sleep: Recorder) -> None:
        self.feed = feed
        self.clock = clock
        self.sleep = sleep
        self.batches: Iterator[Batch] = feed.batches(after)
        self.delivered: list[tuple[str, int, tuple[float, ...], int]] = []
        self.empty = 0

    def pull(self, until: Callable[[], object], what: str) -> None:
        """Take batches until ``until()`` holds (``what`` names it)."""
        def done() -> bool:
            if not until():
                self.take(next(self.batches))
            return bool(until())

        wait_until(done, what)

    def pull_bars(self, n: int) -> None:
        """Take batches until ``n`` bars have been delivered in all."""
        self.pull(lambda: len(self.delivered) >= n, f"{n} delivered bars")

    def settle(self, polls: int = 2) -> None:
        """Take batches until the worker has completed ``polls`` more polls, then one batch more.

        The first of those polls may have begun before the test's last move (of the clock or the venue); the
        second began after it. A poll hands over what it found before the worker records its wait, and the last
        batch is taken after that, so whatever the polls found has been through the feed when this returns.
        """
        target = self.sleep.polls() + polls
        self.pull(lambda: self.sleep.polls() >= target, f"{polls} more polls of the venue")
        self.take(next(self.batches))

    def take(self, batch: Batch) -> None:
        if len(batch.times) == 0:
            self.empty += 1
            return
        assert np.all(np.diff(batch.times) > 0)
        now = ms(self.clock.now())
        for key, rows in batch.rows.items():
            assert len(rows) == len(batch.times)
            frame = self.feed.frames[key]
            for when, row in zip(batch.times, rows, strict=True):
                if row < 0:
                    continue
                bar = frame.iloc[int(row)]
                assert ms(bar["timestamp"]) == int(when)  # the row is the bar of that time, in the frame now
                assert int(when) + self.feed.timeframe.millis <= now  # closed when delivered
                values = tuple(float(bar[c]) for c in ("open", "high", "low", "close", "volume"))
                self.delivered.append((key, int(when), values, now))


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


def holding(feed: AlpacaFeed, key: str, bar: pd.Series) -> Callable[[], bool]:
    """Whether the feed has received ``bar`` from the stream and holds it until it closes."""
    return lambda: ms(bar["timestamp"]) in epoch_ms(feed._pending[key]["timestamp"]).tolist()


def subscribed(stream: FakeAlpacaStream) -> Callable[[], bool]:
    return lambda: stream.subscribers("AAPL") > 0


def expected(frame: pd.DataFrame, key: str) -> list[tuple[str, int, tuple[float, ...]]]:
    return [
        (key, ms(row.timestamp), (row.open, row.high, row.low, row.close, row.volume))
        for row in frame.itertuples(index=False)
    ]


def got(consumer: Consumer) -> list[tuple[str, int, tuple[float, ...]]]:
    return [(key, when, values) for key, when, values, _ in consumer.delivered]


# ------------------------------------------------------------------------------------------------ ccxt
@pytest.fixture(scope="module")
def binance(bars: pd.DataFrame) -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", bars)
        yield server


@pytest.fixture
def venue(binance: FakeBinance) -> Iterator[FakeBinance]:
    binance.reset()
    yield binance
    binance.reset()


class Venue:
    """The shared clock of the feed and the fake exchange."""

    def __init__(self, server: FakeBinance, at: pd.Timestamp) -> None:
        self.server = server
        self.clock = FixedClock(at)
        server.set_now(at)

    def at(self, when: pd.Timestamp) -> None:
        self.clock.set(when)
        self.server.set_now(when)


@pytest.fixture
def made() -> Iterator[list[LiveFeed]]:
    feeds: list[LiveFeed] = []
    yield feeds
    for feed in feeds:
        feed.stop()
    for feed in feeds:  # no worker outlives its test (it would talk to the next test's venue)
        worker = getattr(feed, "_worker", None)
        if worker is not None:
            worker.join()


def ccxt_feed(server: FakeBinance, clock: FixedClock, tmp_path: Path, made: list[LiveFeed],
              recorder: Recorder | None = None, **options: object) -> CcxtFeed:
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=server.url,  # type: ignore[call-arg]
                        http_timeout_s=0.5)
    exchange = build_exchange(settings, "binance")
    values: dict[str, object] = {"poll_s": POLL_S, "warmup": 200, "tick_s": TICK_S, "backoff_base_s": BASE_S,
                                 "backoff_cap_s": CAP_S, "sleep": recorder or Recorder()}
    values.update(options)
    feed = CcxtFeed(exchange, {BTC_KEY: "BTC/USDT"}, M1, clock, **values)  # type: ignore[arg-type]
    made.append(feed)
    return feed


def t0(bars: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp(bars["timestamp"].iloc[T0_ROW]) + pd.Timedelta(seconds=30)


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


def test_venue_down_at_start_is_a_feed_error_naming_the_series(
    venue: FakeBinance, bars: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    market = Venue(venue, t0(bars))
    venue.fail_next(503, times=3)

    with pytest.raises(FeedError, match=r"BTC/USDT.*after 3 attempts"):
        ccxt_feed(venue, market.clock, tmp_path, made, warmup_attempts=3)


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


# ------------------------------------------------------------------------------------------------ Alpaca
@pytest.fixture(scope="module")
def sessions(bars: pd.DataFrame) -> pd.DataFrame:
    """780 real minute bars relabelled as the regular sessions of Friday 2024-07-26 and Monday 2024-07-29."""
    frame = bars.iloc[:780].copy()
    minutes = pd.to_timedelta(range(390), unit="min")
    stamps = pd.DatetimeIndex(list(FRIDAY_OPEN + minutes) + list(MONDAY_OPEN + minutes))
    frame["timestamp"] = pd.Series(stamps, index=frame.index).astype(TIMESTAMP_DTYPE)
    return frame.reset_index(drop=True)


@pytest.fixture
def rest(sessions: pd.DataFrame) -> Iterator[AlpacaServer]:
    with AlpacaServer(page_size=64) as server:
        server.add_bars("AAPL", "1Min", sessions)
        yield server


@pytest.fixture
def stream() -> Iterator[FakeAlpacaStream]:
    with FakeAlpacaStream(api_key="k", api_secret="s") as server:
        yield server


def alpaca_feed(rest: AlpacaServer, stream: FakeAlpacaStream | None, clock: FixedClock, tmp_path: Path,
                made: list[LiveFeed], **options: object) -> AlpacaFeed:
    settings = Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k",  # type: ignore[call-arg]
                        alpaca_api_secret="s", alpaca_data_url=rest.url, http_timeout_s=0.5)
    values: dict[str, object] = {"poll_s": POLL_S, "warmup": 100, "tick_s": TICK_S, "grace_s": 5.0,
                                 "backoff_base_s": BASE_S, "backoff_cap_s": CAP_S, "sleep": Recorder()}
    values.update(options)
    ws = None
    if stream is not None and values.pop("raw_data", False):
        ws = StockDataStream("k", "s", raw_data=True, url_override=stream.url)  # messages as dicts
    elif stream is not None:
        ws = alpaca_stream(settings, url=stream.url)
    feed = AlpacaFeed(make_client(settings), ws, {AAPL_KEY: "AAPL"}, M1, clock, **values)  # type: ignore[arg-type]
    made.append(feed)
    return feed


def monday(minute: int, seconds: int = 0) -> pd.Timestamp:
    return MONDAY_OPEN + minute * MINUTE + pd.Timedelta(seconds=seconds)


def test_alpaca_warm_up_reaches_back_over_the_weekend(
    rest: AlpacaServer, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    clock = FixedClock(monday(60, 30))  # 10:30:30 in New York: the 10:30 bar is open

    feed = alpaca_feed(rest, None, clock, tmp_path, made)

    assert expected(feed.frames[AAPL_KEY], AAPL_KEY) == expected(sessions.iloc[390 + 60 - 100 : 390 + 60], AAPL_KEY)
    assert feed.frames[AAPL_KEY]["timestamp"].iloc[0].day_name() == "Friday"


@pytest.mark.parametrize("raw_data", [False, True])
def test_the_stream_delivers_closed_bars_without_asking_rest(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path,
    made: list[LiveFeed], caplog: pytest.LogCaptureFixture, raw_data: bool,
) -> None:
    clock = FixedClock(monday(60, 30))
    sleep = Recorder()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, raw_data=raw_data, sleep=sleep)
    warm_up_requests = len(rest.bar_requests())
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, sleep)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")

    for step in range(5):
        bar = sessions.iloc[390 + 60 + step]
        assert stream.publish_bar("AAPL", bar) == 1
        consumer.pull(holding(feed, AAPL_KEY, bar), "the feed to receive the streamed bar")
        consumer.settle()
        assert len(consumer.delivered) == step  # received, but still open by the clock
        clock.set(monday(61 + step, 1))
        consumer.pull_bars(step + 1)
    corrected = sessions.iloc[390 + 64].copy()
    corrected["close"] += 1.0
    with caplog.at_level(logging.WARNING, logger="runtime.feeds"):
        stream.publish_bar("AAPL", corrected)
        consumer.pull(lambda: "corrected by the venue" in caplog.text, "the feed to see the correction")
        consumer.settle()

    assert got(consumer) == expected(sessions.iloc[450:455], AAPL_KEY)
    assert len(rest.bar_requests()) == warm_up_requests
    assert "corrected by the venue" in caplog.text
    assert stream.connections == 1 and stream.subscriptions[0]["bars"] == ["AAPL"]


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


def test_no_bar_is_expected_outside_nyse_sessions_and_rest_polling_resumes_at_the_open(
    rest: AlpacaServer, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed]
) -> None:
    saturday = pd.Timestamp("2024-07-27 15:00", tz="UTC")
    clock = FixedClock(saturday)
    sleep = Recorder()
    feed = alpaca_feed(rest, None, clock, tmp_path, made, sleep=sleep)
    assert feed.frames[AAPL_KEY]["timestamp"].iloc[-1] == FRIDAY_OPEN + 389 * MINUTE
    requests = len(rest.bar_requests())

    for when, open_ in [
        ("2024-07-27 15:00", False),  # Saturday
        ("2024-07-29 13:29", False),  # Monday 09:29 New York
        ("2024-07-29 13:30", True),
        ("2024-07-29 19:59", True),
        ("2024-07-29 20:00", False),  # the close
        ("2024-07-04 15:00", False),  # Independence Day
        ("2024-07-03 16:59", True),  # early close at 13:00 New York
        ("2024-07-03 17:00", False),
    ]:
        assert feed.expects_bar(AAPL_KEY, ms(pd.Timestamp(when, tz="UTC"))) is open_, when

    consumer = Consumer(feed, {AAPL_KEY: ms(FRIDAY_OPEN + 389 * MINUTE)}, clock, sleep)
    for moment in ("2024-07-27 23:00", "2024-07-28 12:00", "2024-07-29 13:30:30"):
        clock.set(pd.Timestamp(moment, tz="UTC"))
        consumer.settle()  # the feed polls at that moment and ends with a tick
    assert consumer.delivered == [] and consumer.empty >= 3
    assert len(rest.bar_requests()) == requests  # silence outside the session is not chased
    clock.set(monday(2, 1))
    consumer.pull_bars(2)

    assert got(consumer) == expected(sessions.iloc[390:392], AAPL_KEY)


def test_alpaca_refuses_crypto_symbols_and_unknown_feeds(
    rest: AlpacaServer, tmp_path: Path, made: list[LiveFeed]
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k",  # type: ignore[call-arg]
                        alpaca_api_secret="s", alpaca_data_url=rest.url)
    clock = FixedClock(monday(60))
    with pytest.raises(DataError, match=r"'BTC/USDT' is not a US stock"):
        AlpacaFeed(make_client(settings), None, {"alpaca:BTC/USDT:1m": "BTC/USDT"}, M1, clock)
    with pytest.raises(DataError, match=r"alpaca feed 'nasdaq' is not valid"):
        AlpacaFeed(make_client(settings), None, {AAPL_KEY: "AAPL"}, M1, clock, feed="nasdaq")
    assert rest.bar_requests() == []


# ------------------------------------------------------------------------------------------------ every live feed
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


# ------------------------------------------------------------------------------------------------ replay
def test_replay_feed_is_not_live_expects_bars_and_stops(bars: pd.DataFrame) -> None:
    feed = ReplayFeed({BTC_KEY: bars.iloc[:100]}, M1, batch_size=10)
    assert feed.live is False and feed.expects_bar(BTC_KEY, 0) is True
    batches = feed.batches({BTC_KEY: None})

    first = next(batches)
    feed.stop()

    assert list(first.rows[BTC_KEY]) == list(range(10))
    assert list(batches) == []
    assert epoch_ms(bars["timestamp"].iloc[:10]).tolist() == first.times.tolist()
