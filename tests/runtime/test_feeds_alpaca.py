"""The Alpaca live feed: REST warm-up over the weekend, the bar stream, and NYSE sessions, against local fakes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.sources.alpaca_source import make_client
from pipeline.domain import DataError, epoch_ms
from pipeline.settings import Settings
from runtime.feeds.alpaca_feed import AlpacaFeed
from runtime.feeds.base import LiveFeed
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.alpaca_stream import FakeAlpacaStream
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    AAPL_KEY,
    FRIDAY_OPEN,
    M1,
    MINUTE,
    Consumer,
    Recorder,
    alpaca_feed,
    expected,
    got,
    monday,
    ms,
    subscribed,
)

bars = feed_helpers.bars  # the real minute bars as two NYSE sessions, the fake Alpaca REST API and stream
sessions = feed_helpers.sessions
rest = feed_helpers.rest
stream = feed_helpers.stream
made = feed_helpers.made


def holding(feed: AlpacaFeed, key: str, bar: pd.Series) -> Callable[[], bool]:
    """Whether the feed has received ``bar`` from the stream and holds it until it closes."""
    return lambda: ms(bar["timestamp"]) in epoch_ms(feed._pending[key]["timestamp"]).tolist()


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
