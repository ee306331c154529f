"""Alpaca's stream refusing the feed: an error frame a reconnect cannot fix (402 auth failed, 405 symbol limit
exceeded, 409 insufficient subscription, 410 invalid subscribe action for this feed) gives the stream up, says so
once, and the feed goes on polling its minute bars through REST; a passing refusal (406 connection limit exceeded)
is backed off and reconnected as before.

The real alpaca-py client runs against the local fake of the stream; nothing waits on wall time (silence is judged
on the feed's clock, which the tests move)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from runtime.feeds.alpaca_feed import AlpacaFeed
from runtime.feeds.alpaca_watchdog import STREAM_DOWN, STREAM_RECONNECTED, STREAM_REJECTED
from runtime.feeds.base import LiveFeed
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.alpaca_stream import FakeAlpacaStream
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    AAPL_KEY,
    BASE_S,
    CAP_S,
    Consumer,
    StreamWaits,
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

JITTER = 0.2
"""The retry policy's largest share of a wait taken off at random (pipeline.retry.DEFAULT_JITTER)."""


class Started:
    """A feed on the fakes at 10:30:30 on Monday (the 10:29 bar handed over), with a REST grace of 15 minutes:
    a streamed bar that does not come is asked of REST only then, a polled one as soon as it has closed."""

    def __init__(self, rest: AlpacaServer, stream: FakeAlpacaStream, tmp_path: Path, made: list[LiveFeed]) -> None:
        self.clock = FixedClock(monday(60, 30))
        self.waits = StreamWaits()
        self.feed = alpaca_feed(rest, stream, self.clock, tmp_path, made, sleep=self.waits, grace_s=900.0)
        self.events: list[tuple[str, str]] = []
        self.feed.on_event = lambda kind, text: self.events.append((kind, text))
        self.consumer = Consumer(self.feed, {AAPL_KEY: ms(monday(59))}, self.clock, self.waits)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def polled_through_rest(self, sessions: pd.DataFrame) -> None:
        """Each bar arrives through REST as soon as it has closed, and a stream silent for longer than its limit
        in session is not replaced (there is none)."""
        self.clock.set(monday(61, 1))  # the 10:30 bar closed a second ago
        self.consumer.pull_bars(1)
        self.clock.set(monday(63, 31))  # 181 s without a streamed bar in session
        self.consumer.pull_bars(3)
        self.consumer.settle()
        assert got(self.consumer) == expected(sessions.iloc[450:453], AAPL_KEY)
        assert self.waits.reconnects == []  # never reconnected


def rejection(feed: AlpacaFeed) -> int | None:
    watchdog = feed.watchdog
    return None if watchdog is None or watchdog.rejected is None else watchdog.rejected.code


def test_an_insufficient_subscription_gives_the_stream_up_once_and_its_bars_are_polled_through_rest(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed],
) -> None:
    stream.refuse_subscriptions(409, close=True)  # a feed outside the account's market-data plan
    run = Started(rest, stream, tmp_path, made)
    run.consumer.pull(lambda: run.events, "the feed's first word about its stream")
    assert run.kinds() == [STREAM_REJECTED] and stream.rejected == 1 and rejection(run.feed) == 409

    run.polled_through_rest(sessions)
    assert run.kinds() == [STREAM_REJECTED]  # said once
    assert stream.rejected == 1 and stream.connections == 1
    text = run.events[0][1]
    assert "iex bar stream refused the subscription to the bars of AAPL: 409 insufficient subscription" in text
    assert "polled through REST" in text and "TRADEFORGE_ALPACA_FEED=iex" in text


@pytest.mark.parametrize(("code", "words"), [(405, "symbol limit exceeded"),
                                             (410, "invalid subscribe action for this feed")])
def test_a_subscription_refused_for_good_on_a_connection_left_open_is_not_retried(
    code: int, words: str, rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path,
    made: list[LiveFeed], caplog: pytest.LogCaptureFixture,
) -> None:
    stream.refuse_subscriptions(code)  # the connection stays open, subscribed to nothing
    run = Started(rest, stream, tmp_path, made)
    with caplog.at_level(logging.ERROR, logger="alpaca"):  # alpaca-py logs an error frame it is left to handle
        run.consumer.pull(lambda: run.events or f"{words} ({code})" in caplog.text, "the refusal reaching the feed")
    assert run.kinds() == [STREAM_REJECTED] and rejection(run.feed) == code
    run.consumer.pull(lambda: stream.open_connections() == 0, "the refused connection closed by the feed")

    run.polled_through_rest(sessions)
    assert run.kinds() == [STREAM_REJECTED]
    assert stream.rejected == 1 and stream.connections == 1
    assert f"the bars of AAPL: {code} {words}" in run.events[0][1]


@pytest.mark.parametrize(("code", "advice"), [(402, "TRADEFORGE_ALPACA_API_KEY"), (409, "TRADEFORGE_ALPACA_FEED")])
def test_a_login_refused_for_good_is_not_retried(
    code: int, advice: str, rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path,
    made: list[LiveFeed],
) -> None:
    stream.refuse_logins(code)
    run = Started(rest, stream, tmp_path, made)
    run.consumer.pull(lambda: run.events, "the feed's first word about its stream")
    assert run.kinds() == [STREAM_REJECTED] and rejection(run.feed) == code

    run.polled_through_rest(sessions)
    assert run.kinds() == [STREAM_REJECTED]
    assert stream.rejected_logins == 1 and stream.subscriptions == []
    assert "iex bar stream refused the login" in run.events[0][1] and advice in run.events[0][1]


def test_a_connection_limit_answered_to_the_subscription_is_backed_off_until_a_slot_is_free(
    rest: AlpacaServer, stream: FakeAlpacaStream, tmp_path: Path, made: list[LiveFeed],
) -> None:
    stream.refuse_subscriptions(406, close=True)
    run = Started(rest, stream, tmp_path, made)
    run.consumer.pull(lambda: stream.rejected >= 4, "four subscriptions refused: connection limit exceeded")
    stream.refuse_subscriptions(None)
    run.consumer.pull(subscribed(stream), "the feed's stream subscribed once the venue serves it")
    run.consumer.settle()

    refused = stream.rejected
    waits = run.waits.reconnects
    assert len(waits) == refused and rejection(run.feed) is None
    assert all(min(CAP_S, BASE_S * 2.0 ** (n - 1)) * (1 - JITTER) - 1e-6 <= wait <= min(CAP_S, BASE_S * 2.0 ** (n - 1))
               + 1e-6 for n, wait in enumerate(waits, start=1)), waits
    assert run.kinds() == [STREAM_DOWN, STREAM_RECONNECTED]
    assert "(406)" in run.events[0][1]
