"""The Alpaca stream's watchdog: a stream that stays connected but goes silent in session is replaced, its missed
bars come through REST once and in order, silence outside sessions is left alone, and reconnects back off (a 429
handshake's Retry-After and Alpaca's 406 connection limit respected)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from alpaca.data.live.stock import StockDataStream

from pipeline.clock import FixedClock
from pipeline.domain import DataError, epoch_ms
from pipeline.settings import Settings
from runtime.feeds.alpaca_feed import AlpacaFeed, alpaca_stream
from runtime.feeds.alpaca_watchdog import STREAM_DOWN, STREAM_RECONNECTED, STREAM_SILENT
from runtime.feeds.base import LiveFeed
from tests.fakes.alpaca_server import AlpacaServer
from tests.fakes.alpaca_stream import FakeAlpacaStream
from tests.runtime import feed_helpers
from tests.runtime.feed_helpers import (
    AAPL_KEY,
    BASE_S,
    CAP_S,
    FRIDAY_OPEN,
    MINUTE,
    MONDAY_OPEN,
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

SILENT = pd.Timedelta(seconds=181)
"""Just over the default limit of silence for minute bars (3 bar lengths)."""
JITTER = 0.2
"""The retry policy's largest share of a wait taken off at random (pipeline.retry.DEFAULT_JITTER)."""


def holding(feed: AlpacaFeed, bar: pd.Series) -> Callable[[], bool]:
    """Whether the feed has received ``bar`` from the stream (and holds it until it closes)."""
    return lambda: ms(bar["timestamp"]) in epoch_ms(feed._pending[AAPL_KEY]["timestamp"]).tolist()


def resubscribed(stream: FakeAlpacaStream, connections: int) -> Callable[[], bool]:
    """Whether the fake has seen ``connections`` authenticated connections, the last one subscribed to AAPL."""
    return lambda: (stream.connections >= connections and len(stream.subscriptions) >= connections
                    and stream.subscribers("AAPL") > 0)


def backoff(failures: int) -> float:
    """The retry policy's wait after ``failures`` failures in a row, before its jitter."""
    return float(min(CAP_S, BASE_S * 2.0 ** (failures - 1)))


def jittered(wait: float, failures: int) -> bool:
    return backoff(failures) * (1 - JITTER) - 1e-6 <= wait <= backoff(failures) + 1e-6


def listen(feed: AlpacaFeed) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    feed.on_event = lambda kind, text: events.append((kind, text))
    return events


def kinds(events: list[tuple[str, str]]) -> list[str]:
    return [kind for kind, _ in events]


def test_a_silent_stream_in_session_is_replaced_and_its_missed_bars_come_from_rest_once_in_order(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed],
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k",
                        alpaca_api_secret="s", alpaca_data_url=rest.url)
    built: list[StockDataStream] = []

    def factory() -> StockDataStream:
        built.append(alpaca_stream(settings, url=stream.url))
        return built[-1]

    stream.limit_connections(1)  # Alpaca's one stream per account: the silent one must be closed to reconnect
    clock = FixedClock(monday(60, 30))
    waits = StreamWaits()
    # a grace of 15 minutes: REST is asked for the missed bars only once a later bar has been streamed
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits, grace_s=900.0, stream_factory=factory)
    events = listen(feed)
    warm_up_requests = len(rest.bar_requests())
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, waits)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    assert stream.publish_bar("AAPL", sessions.iloc[450]) == 1  # 10:30, received at 10:30:30
    consumer.pull(holding(feed, sessions.iloc[450]), "the feed to receive the 10:30 bar")
    clock.set(monday(61, 1))
    consumer.pull_bars(1)

    stream.go_silent()
    assert stream.publish_bar("AAPL", sessions.iloc[451]) == 0  # connected and subscribed, but nothing comes
    clock.set(monday(62, 30))  # 120 s without a bar: not yet silent
    assert stream.publish_bar("AAPL", sessions.iloc[452]) == 0
    consumer.settle()
    assert stream.connections == 1 and stream.subscribers("AAPL") == 1 and built == []
    assert len(consumer.delivered) == 1 and len(rest.bar_requests()) == warm_up_requests

    clock.set(monday(63, 31))  # 181 s without a bar in session: silent
    consumer.pull(resubscribed(stream, 2), "the feed to replace its silent stream")
    assert stream.open_connections() == 1 and stream.limited == 0  # the silent connection was closed first
    assert len(built) == 1 and len(consumer.delivered) == 1  # nothing missed is delivered before it is known
    assert stream.publish_bar("AAPL", sessions.iloc[453]) == 1  # 10:33 on the new connection
    consumer.pull(holding(feed, sessions.iloc[453]), "the feed to receive the 10:33 bar on its new stream")
    clock.set(monday(64, 1))
    consumer.pull_bars(4)  # the gap (10:31, 10:32) filled through REST before 10:33
    backfill_requests = len(rest.bar_requests())
    assert stream.publish_bar("AAPL", sessions.iloc[454]) == 1
    consumer.pull(holding(feed, sessions.iloc[454]), "the feed to receive the 10:34 bar")
    clock.set(monday(65, 1))
    consumer.pull_bars(5)
    consumer.settle()

    assert got(consumer) == expected(sessions.iloc[450:455], AAPL_KEY)  # each once, in order, none missing
    backfills = rest.bar_requests()[warm_up_requests:]
    assert len(backfills) == 1 and backfills[0].params["start"].startswith("2024-07-29T14:31:00")
    assert len(rest.bar_requests()) == backfill_requests  # 10:34 came from the new stream alone
    assert stream.connections == 2 and [s["bars"] for s in stream.subscriptions] == [["AAPL"], ["AAPL"]]
    assert kinds(events) == [STREAM_SILENT, STREAM_RECONNECTED]
    assert "no bar for 181 s while the market was open" in events[0][1]
    assert len(waits.reconnects) == 1 and jittered(waits.reconnects[0], 1)


def test_a_silent_stream_outside_sessions_is_left_alone_and_judged_from_the_open(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed],
) -> None:
    clock = FixedClock(pd.Timestamp("2024-07-27 15:00", tz="UTC"))  # Saturday
    waits = StreamWaits()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits)
    events = listen(feed)
    consumer = Consumer(feed, {AAPL_KEY: ms(FRIDAY_OPEN + 389 * MINUTE)}, clock, waits)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    stream.go_silent(new_connections=True)

    for moment in ("2024-07-27 23:00", "2024-07-28 12:00", "2024-07-29 13:29:59",  # weekend, before the open
                   "2024-07-29 13:30", "2024-07-29 13:33"):  # in session, 180 s after the open: not yet silent
        clock.set(pd.Timestamp(moment, tz="UTC"))
        consumer.settle()
        assert stream.connections == 1 and stream.open_connections() == 1, moment
    assert events == [] and waits.reconnects == []

    clock.set(MONDAY_OPEN + SILENT)  # 181 s of silence counted from the open, not from Saturday
    consumer.pull(resubscribed(stream, 2), "the feed to replace its stream silent since the open")
    consumer.pull_bars(3)
    consumer.settle()

    assert got(consumer) == expected(sessions.iloc[390:393], AAPL_KEY)  # the first three Monday bars, via REST
    assert kinds(events) == [STREAM_SILENT, STREAM_RECONNECTED]


def test_repeated_silent_reconnects_back_off_and_a_stream_that_delivers_resets_the_backoff(
    rest: AlpacaServer, stream: FakeAlpacaStream, sessions: pd.DataFrame, tmp_path: Path, made: list[LiveFeed],
) -> None:
    clock = FixedClock(monday(60, 30))
    waits = StreamWaits()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits)
    events = listen(feed)
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, waits)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    stream.go_silent(new_connections=True)  # every connection stays mute

    for failures in range(1, 6):
        clock.set(clock.now() + SILENT)
        consumer.pull(resubscribed(stream, failures + 1), f"silent reconnect {failures}")
        assert len(waits.reconnects) == failures  # one wait before each reconnect, none more
    assert [round(backoff(n), 6) for n in range(1, 6)] == [0.01, 0.02, 0.04, 0.08, 0.08]
    assert all(jittered(wait, n) for n, wait in enumerate(waits.reconnects, start=1)), waits.reconnects

    stream.speak()
    now = clock.now()
    bar = sessions.iloc[390 + int((now - MONDAY_OPEN) / MINUTE)]  # the bar open now
    assert stream.publish_bar("AAPL", bar) == 1
    consumer.pull(holding(feed, bar), "the feed to receive a bar on its sixth stream")
    stream.go_silent()
    clock.set(now + SILENT)
    consumer.pull(resubscribed(stream, 7), "the feed to replace its stream, silent after a bar")
    consumer.settle()

    assert jittered(waits.reconnects[-1], 1), waits.reconnects  # the healthy stream reset the backoff
    assert len(waits.reconnects) == 6 and stream.connections == 7
    assert kinds(events) == [STREAM_SILENT, STREAM_RECONNECTED] * 6


def test_a_429_handshake_has_its_retry_after_honoured(
    rest: AlpacaServer, stream: FakeAlpacaStream, tmp_path: Path, made: list[LiveFeed],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FixedClock(monday(60, 30))
    waits = StreamWaits()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits)
    events = listen(feed)
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, waits)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    stream.go_silent()
    stream.refuse_connections(status=429, retry_after=7)

    with caplog.at_level(logging.WARNING, logger="runtime.feeds"):
        clock.set(monday(63, 31))
        consumer.pull(lambda: stream.refused >= 3, "three reconnects refused with 429")
        stream.refuse_connections(False)
        consumer.pull(resubscribed(stream, 2), "the feed's stream to subscribe again")
        consumer.settle()

    refused = stream.refused
    assert len(waits.reconnects) == 1 + refused  # one wait before each attempt: no attempt without one
    assert jittered(waits.reconnects[0], 1)  # after the silent connection
    assert waits.reconnects[1:] == [7.0] * refused  # Retry-After: 7 (more than any backoff up to the cap)
    assert "HTTP 429" in caplog.text
    assert kinds(events) == [STREAM_SILENT, STREAM_RECONNECTED]  # the refusals during the outage: logged only


def test_alpacas_connection_limit_406_is_backed_off_until_the_venue_frees_a_slot(
    rest: AlpacaServer, stream: FakeAlpacaStream, tmp_path: Path, made: list[LiveFeed],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream.limit_connections(1, unreaped=1)  # another connection of the account holds the one slot
    clock = FixedClock(monday(60, 30))
    waits = StreamWaits()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits)
    events = listen(feed)
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, waits)

    with caplog.at_level(logging.WARNING, logger="runtime.feeds"):
        consumer.pull(lambda: stream.limited >= 5, "five logins refused: connection limit exceeded")
        stream.limit_connections(1)  # the venue reaped the other connection
        consumer.pull(subscribed(stream), "the feed's stream to subscribe")
        consumer.settle()

    limited = stream.limited
    assert len(waits.reconnects) == limited and stream.connections == 1
    assert all(jittered(wait, n) for n, wait in enumerate(waits.reconnects, start=1)), waits.reconnects
    assert waits.reconnects[:4] == sorted(waits.reconnects[:4])  # growing up to the cap
    assert "connection limit exceeded" in caplog.text and "(406)" in caplog.text
    assert kinds(events) == [STREAM_DOWN, STREAM_RECONNECTED]  # the outage told once, and its end
    assert "connection limit" in events[0][1]


def test_the_limit_of_silence_must_exceed_one_bar_length_and_none_turns_the_judging_off(
    rest: AlpacaServer, stream: FakeAlpacaStream, tmp_path: Path, made: list[LiveFeed]
) -> None:
    clock = FixedClock(monday(60, 30))
    with pytest.raises(DataError, match=r"silent_after_bars 1 is not valid"):
        alpaca_feed(rest, stream, clock, tmp_path, made, silent_after_bars=1)
    waits = StreamWaits()
    feed = alpaca_feed(rest, stream, clock, tmp_path, made, sleep=waits, silent_after_bars=None)  # never judged
    consumer = Consumer(feed, {AAPL_KEY: ms(monday(59))}, clock, waits)
    consumer.pull(subscribed(stream), "the feed's stream to subscribe to AAPL bars")
    stream.go_silent()
    clock.set(monday(70, 30))  # ten minutes without a bar in session
    consumer.pull_bars(10)
    consumer.settle()
    assert stream.connections == 1 and stream.open_connections() == 1 and waits.reconnects == []
