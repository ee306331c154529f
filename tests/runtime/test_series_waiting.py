"""A live feed's bars wait for the other series read with them: the real ccxt client polls a fake Binance for real
BTC/USDT 5m bars and the ETH/USDT hours a strategy reads with them. The 5m bar closing at 11:00 is held until
the hour closing at 11:00 has come; an hour that does not come is waited for as long as the staleness rule allows,
then the bar goes on with a warning, once per episode.

No test here waits for a length of time: it takes batches until the feed has done what it waits for
(``tests.waiting.wait_until``); the venue's clock and the feed's are the same ``FixedClock``, moved by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe, epoch_ms
from pipeline.settings import Settings
from runtime.feeds import Batch
from runtime.feeds.base import LiveFeed
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.feeds.waiting import WaitingFeed
from tests.conftest import shared_file
from tests.fakes.binance_server import FakeBinance
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import BASE_S, CAP_S, POLL_S, TICK_S, Recorder, Venue, ms
from tests.waiting import wait_until

M5 = Timeframe.parse("5m")
MAIN, HOURS = "binance:BTC/USDT:5m", "binance:ETH/USDT:1h"
START, END = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-05", tz="UTC")


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(f"2024-03-04 {text}", tz="UTC")


@pytest.fixture(scope="module")
def five() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_5m.parquet"),
                           filters=[("timestamp", ">=", START), ("timestamp", "<", END)])


@pytest.fixture(scope="module")
def hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_ETH-USDT_1h.parquet"),
                           filters=[("timestamp", ">=", START), ("timestamp", "<", END)])


@pytest.fixture
def venue(five: pd.DataFrame, hours: pd.DataFrame) -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "5m", five)
        server.serve_bars("ETH/USDT", "1h", hours)
        yield server


class Taker:
    """Takes batches from the waiting feed like the node does, recording which bar times of which key came."""

    def __init__(self, feed: WaitingFeed, after: dict[str, int | None]) -> None:
        self.feed = feed
        self.batches: Iterator[Batch] = feed.batches(after)
        self.came: list[list[tuple[str, int]]] = []

    def until(self, done: object, what: str) -> None:
        def step() -> bool:
            if not callable(done) or not done():
                batch = next(self.batches)
                if len(batch.times):
                    self.came.append([(key, int(at)) for key, rows in batch.rows.items()
                                      for at, row in zip(batch.times, rows, strict=True) if row >= 0])
                    for key, rows in batch.rows.items():  # each row is the bar of its time, in the frame now
                        stamps = epoch_ms(self.feed.frames[key]["timestamp"])
                        assert np.array_equal(stamps[rows[rows >= 0]], batch.times[rows >= 0])
            return bool(callable(done) and done())

        wait_until(step, what)

    def came_in_one_batch(self, *bars: tuple[str, pd.Timestamp]) -> bool:
        return any(all((key, ms(at)) in batch for key, at in bars) for batch in self.came)

    def seen(self, key: str, at: pd.Timestamp) -> bool:
        return any((key, ms(at)) in batch for batch in self.came)

    def first(self, key: str, at: pd.Timestamp) -> int:
        """The number of the batch that brought the bar of ``key`` at ``at``."""
        return next(i for i, batch in enumerate(self.came) if (key, ms(at)) in batch)


made = feed_helpers.made  # the feeds a test makes, stopped and joined after it


def _feed(venue: FakeBinance, market: Venue, tmp_path: Path, made: list[LiveFeed],
          late: list[str]) -> tuple[CcxtFeed, WaitingFeed]:
    settings = Settings(_env_file=None, data_dir=tmp_path, ccxt_rest_url=venue.url,  # type: ignore[call-arg]
                        http_timeout_s=0.5)
    inner = CcxtFeed(build_exchange(settings, "binance"), {MAIN: "BTC/USDT", HOURS: "ETH/USDT"}, M5, market.clock,
                     poll_s=POLL_S, warmup=30, tick_s=TICK_S, backoff_base_s=BASE_S, backoff_cap_s=CAP_S,
                     sleep=Recorder(), series=[HOURS])
    made.append(inner)
    return inner, WaitingFeed(inner, {MAIN: (HOURS,)}, market.clock, stale_after_bars=3, on_late=late.append)


def test_a_bar_waits_for_the_other_series_bar_closing_with_it(venue: FakeBinance, hours: pd.DataFrame,
                                                               tmp_path: Path, made: list[LiveFeed]) -> None:
    market = Venue(venue, _at("10:57:30"))
    late: list[str] = []
    inner, feed = _feed(venue, market, tmp_path, made, late)
    assert inner.timeframe_of(HOURS) == Timeframe.parse("1h") and inner.timeframe_of(MAIN) == M5
    assert inner.frames[HOURS]["timestamp"].iloc[-1] == _at("09:00")  # warm-up: 30 closed hours
    assert inner.frames[MAIN]["timestamp"].iloc[-1] == _at("10:50")
    taker = Taker(feed, {MAIN: ms(_at("10:50")), HOURS: ms(_at("09:00"))})

    venue.serve_bars("ETH/USDT", "1h", hours.loc[hours["timestamp"] != _at("10:00")])  # the hour comes late
    market.at(_at("11:00:30"))
    taker.until(lambda: len(feed.held.get(MAIN, [])) == 1, "the 5m bar of 10:55 held back")
    assert feed.held[MAIN].tolist() == [ms(_at("10:55"))] and not taker.seen(MAIN, _at("10:55"))
    assert inner.frames[MAIN]["timestamp"].iloc[-1] == _at("10:55")  # the feed has it; the node does not yet

    venue.serve_bars("ETH/USDT", "1h", hours)  # the hour of 10:00 arrives
    taker.until(lambda: taker.seen(MAIN, _at("10:55")), "the 5m bar of 10:55, once the hour closing with it came")
    assert taker.came_in_one_batch((MAIN, _at("10:55")), (HOURS, _at("10:00")))
    assert not feed.held and not late

    market.at(_at("11:05:30"))  # the 11:00 bar closes at 11:05: the hour it needs (10:00) is there already
    taker.until(lambda: taker.seen(MAIN, _at("11:00")), "the 5m bar of 11:00, at once")
    assert not late


def test_a_bar_waited_for_too_long_goes_on_with_a_warning_once(venue: FakeBinance, hours: pd.DataFrame,
                                                               tmp_path: Path, made: list[LiveFeed]) -> None:
    market = Venue(venue, _at("10:57:30"))
    late: list[str] = []
    inner, feed = _feed(venue, market, tmp_path, made, late)
    taker = Taker(feed, {MAIN: ms(_at("10:50")), HOURS: ms(_at("09:00"))})
    venue.serve_bars("ETH/USDT", "1h", hours.loc[hours["timestamp"] < _at("10:00")])  # the venue stops serving hours

    market.at(_at("11:14:59"))  # the 10:55 bar closed 14:59 ago: three 5m bars is the limit
    taker.until(lambda: len(feed.held.get(MAIN, [])) == 3, "the bars of 10:55 to 11:05 held back")
    assert not late and not taker.seen(MAIN, _at("10:55"))

    market.at(_at("11:15:01"))
    taker.until(lambda: taker.seen(MAIN, _at("11:10")), "the held bars released")
    assert len(late) == 1, late
    assert "binance:ETH/USDT:1h has not delivered its bars closing by 2024-03-04T11:00:00+00:00" in late[0]
    assert "decided with its last delivered bar (2024-03-04T09:00:00+00:00)" in late[0]
    market.at(_at("11:20:30"))  # the same silence: not waited for again
    taker.until(lambda: taker.seen(MAIN, _at("11:15")), "the next bar, without waiting")
    assert len(late) == 1

    venue.serve_bars("ETH/USDT", "1h", hours)  # the hours come back: waiting resumes with them
    taker.until(lambda: taker.seen(HOURS, _at("10:00")), "the late hours")
    assert inner.frames[HOURS]["timestamp"].iloc[-1] == _at("10:00")
    market.at(_at("12:00:30"))  # 11:55 closes at 12:00 with the hour of 11:00, which the venue serves
    taker.until(lambda: taker.seen(MAIN, _at("11:55")), "the 5m bar of 11:55")
    assert taker.first(HOURS, _at("11:00")) <= taker.first(MAIN, _at("11:55"))  # never before its hour
    assert len(late) == 1



def test_an_alpaca_feed_polls_an_other_series_at_its_own_timeframe(tmp_path: Path, made: list[LiveFeed]) -> None:
    from pipeline.clock import FixedClock
    from pipeline.data.resample import resample_bars
    from pipeline.data.sources.alpaca_source import make_client
    from runtime.feeds.alpaca_feed import AlpacaFeed
    from tests.fakes.alpaca_server import AlpacaServer
    from tests.runtime.feed_helpers import AAPL_KEY, FRIDAY_OPEN, MONDAY_OPEN, Consumer, monday

    minutes = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                              filters=[("timestamp", ">=", pd.Timestamp("2024-07-29", tz="UTC"))]).iloc[:780].copy()
    offsets = pd.to_timedelta(range(390), unit="min")  # relabelled as two NYSE sessions, as the feed tests do
    stamps = pd.DatetimeIndex(list(FRIDAY_OPEN + offsets) + list(MONDAY_OPEN + offsets))
    minutes["timestamp"] = pd.Series(stamps, index=minutes.index).astype(minutes["timestamp"].dtype)
    fives = resample_bars(minutes.reset_index(drop=True), Timeframe.parse("1m"), M5)
    spy = "alpaca:SPY:5m"
    with AlpacaServer(page_size=64) as rest:
        rest.add_bars("AAPL", "1Min", minutes)
        rest.add_bars("SPY", "5Min", fives)
        settings = Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k",  # type: ignore[call-arg]
                            alpaca_api_secret="s", alpaca_data_url=rest.url, http_timeout_s=0.5)
        clock = FixedClock(monday(60, 30))  # 10:30:30 in New York
        sleep = Recorder()
        feed = AlpacaFeed(make_client(settings), None, {AAPL_KEY: "AAPL", spy: "SPY"}, Timeframe.parse("1m"), clock,
                          poll_s=POLL_S, warmup=30, tick_s=TICK_S, grace_s=5.0, backoff_base_s=BASE_S,
                          backoff_cap_s=CAP_S, sleep=sleep, series=[spy])
        made.append(feed)
        assert feed.timeframe_of(spy) == M5
        assert feed.frames[AAPL_KEY]["timestamp"].iloc[-1] == monday(59)
        assert feed.frames[spy]["timestamp"].iloc[-1] == monday(55)  # the five minutes that closed at 10:30
        assert len(feed.frames[spy]) == 30 and feed.frames[spy]["timestamp"].diff().iloc[-1] == pd.Timedelta("5min")
        consumer = Consumer(feed, {AAPL_KEY: ms(monday(59)), spy: ms(monday(55))}, clock, sleep)
        clock.set(monday(65, 30))
        consumer.pull(lambda: any(key == spy for key, *_ in consumer.delivered), "the five minutes of 10:30")
        consumer.pull_bars(6)
    bars = [(key, when) for key, when, *_ in consumer.delivered]
    assert (spy, ms(monday(60))) in bars and [w for k, w in bars if k == spy] == [ms(monday(60))]
    assert [w for k, w in bars if k == AAPL_KEY] == [ms(monday(m)) for m in range(60, 65)]


def test_the_wiring_gives_each_other_series_a_key_on_the_live_feeds_venue() -> None:
    from pipeline.backtest.portfolio import PortfolioConfig
    from runtime.wiring import live_series
    from tests.conftest import REPO

    example = f"{REPO / 'examples' / 'strategies' / 'regime_filtered.py'}:RegimeFiltered"
    config = PortfolioConfig.model_validate({"cash": 1000, "strategies": [
        {"id": "r", "strategy": example, "symbols": ["ETH/USDT", "SOL/USDT"], "timeframe": "5m", "allocation": 1.0}]})
    keys, symbols = live_series(config, "binance")
    assert keys == {"r:ETH/USDT": ("binance:BTC/USDT:1h",), "r:SOL/USDT": ("binance:BTC/USDT:1h",)}
    assert symbols == {"binance:BTC/USDT:1h": "BTC/USDT"}
