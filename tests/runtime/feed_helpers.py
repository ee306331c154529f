"""The live feeds' test setup: real minute bars, fakes of Binance and Alpaca, and a consumer that pulls batches."""

# ccxt: a fake Binance (REST klines) serves real BTC/USDT minute bars; its clock and the feed's clock move
# together, so the candle containing "now" is served as the still-open candle. The two-series test also serves
# the BTC/USDT bars of even minutes as ETH/USDT (the shared data has no ETH/USDT minute bars).
#
# Alpaca: a fake of the historical bars API (REST) and a fake of the market-data stream (websocket, msgpack).
# There are no real US stock minute bars in the shared data, so real BTC/USDT minute bars are relabelled as two
# NYSE regular sessions (Friday 2024-07-26 and Monday 2024-07-29, 09:30-16:00 New York).
#
# No test here bounds or spends wall time: a test waits for what the feed has done (bars delivered, polls
# completed, a stream subscribed, a warning logged), through ``tests.waiting.wait_until``, and the ticks and the
# stop of ``LiveFeed`` are driven by a fake ``monotonic`` clock. The worker's ``sleep`` (``Recorder``) records its
# waits and paces the worker; nothing synchronises on it.

from __future__ import annotations

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
from pipeline.domain import TIMESTAMP_DTYPE, Timeframe
from pipeline.settings import Settings
from runtime.feeds import Batch
from runtime.feeds.alpaca_feed import AlpacaFeed, alpaca_stream
from runtime.feeds.base import LiveFeed
from runtime.feeds.ccxt_feed import CcxtFeed
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


class Recorder:
    """A feed's ``sleep``: records each wait and waits briefly for real, so that the worker does not spin.

    The worker waits ``poll_s`` after each poll, once it has handed over what the poll found; every other wait
    is a backoff of the retry policy.
    """

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.pace(seconds)

    @staticmethod
    def pace(seconds: float) -> None:
        """Wait briefly for real, pacing the thread that waits (no test waits on it)."""
        time.sleep(min(seconds, 0.03))

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


class StreamWaits(Recorder):
    """A ``Recorder`` that keeps the waits of the Alpaca stream's thread (its reconnect backoffs) apart, in
    ``reconnects``; the worker's waits (``waits``, ``polls``, ``backoffs``) keep their meaning."""

    def __init__(self) -> None:
        super().__init__()
        self.reconnects: list[float] = []

    def __call__(self, seconds: float) -> None:
        if threading.current_thread().name != "alpaca-stream":
            super().__call__(seconds)
            return
        self.reconnects.append(round(seconds, 6))
        self.pace(seconds)
