"""The Alpaca source's bars through the real alpaca-py client: daily history, still-open sessions, intraday."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, bars_equal
from tests.fakes.alpaca_server import AlpacaServer, alpaca_daily_stamps
from tests.pipeline.data import alpaca_source_helpers
from tests.pipeline.data.alpaca_source_helpers import (
    DAILY,
    MINUTE,
    SESSION_OPEN,
    fetch_aapl,
    make_source,
)

_no_outside_config = alpaca_source_helpers._no_outside_config  # settings from the test alone (autouse)
aapl = alpaca_source_helpers.aapl  # the real AAPL daily bars, served by the Alpaca stand-in
session_minutes = alpaca_source_helpers.session_minutes
server = alpaca_source_helpers.server


# -- daily history -------------------------------------------------------------------------------------------


def test_full_history_arrives_over_several_pages_with_exact_values(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame
) -> None:
    server.page_size = 500
    source, sleeps = make_source(tmp_path, server)
    progress: list[int] = []

    bars = source.fetch(source.instrument("AAPL"), DAILY, None, progress=progress.append)

    assert set(alpaca_daily_stamps(aapl)["timestamp"].dt.hour) == {4, 5}  # what was served: New York midnight
    assert bars_equal(bars, aapl)
    assert list(bars.dtypes.astype(str)) == [TIMESTAMP_DTYPE] + ["float64"] * 5
    assert (bars["timestamp"] == bars["timestamp"].dt.normalize()).all()  # trading dates at 00:00 UTC
    requests = server.bar_requests()
    assert len(requests) == math.ceil(len(aapl) / 500) == 7
    assert "page_token" not in requests[0].params
    tokens = [r.params["page_token"] for r in requests[1:]]
    assert len(set(tokens)) == len(tokens)
    assert all(r.params["symbols"] == "AAPL" and r.params["timeframe"] == "1Day" for r in requests)
    assert all(r.params["adjustment"] == "split" for r in requests)
    assert requests[0].params["end"] == "2013-03-04T12:00:00+00:00"  # nothing beyond the clock's now
    assert progress == [len(aapl)]
    assert sleeps == []


def test_daily_bars_since_a_date_start_at_that_trading_date(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame
) -> None:
    since = pd.Timestamp("2012-06-01", tz="UTC")
    source, _ = make_source(tmp_path, server)

    bars = fetch_aapl(source, since)

    expected = aapl.loc[aapl["timestamp"] >= since].reset_index(drop=True)
    assert bars_equal(bars, expected)
    assert bars["timestamp"].iloc[0] == since
    assert server.bar_requests()[0].params["start"] == "2012-06-01T00:00:00+00:00"


def test_nothing_new_since_the_last_bar_is_an_empty_frame(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    bars = fetch_aapl(source, pd.Timestamp("2013-03-02", tz="UTC"))

    assert bars.empty
    assert list(bars.columns) == ["timestamp", "open", "high", "low", "close", "volume"]


# -- still-open bars -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "last_date"),
    [
        ("2013-03-01T18:00:00Z", "2013-02-28"),  # 13:00 in New York: the session of 03-01 is still open
        ("2013-03-01T20:59:59Z", "2013-02-28"),
        ("2013-03-01T21:00:00Z", "2013-03-01"),  # 16:00 in New York: closed
        ("2012-11-23T17:59:00Z", "2012-11-21"),  # day after Thanksgiving: early close at 13:00 New York
        ("2012-11-23T18:00:00Z", "2012-11-23"),
    ],
)
def test_a_daily_bar_counts_once_its_session_has_closed(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame, now: str, last_date: str
) -> None:
    source, _ = make_source(tmp_path, server, now=now)

    bars = fetch_aapl(source, pd.Timestamp("2012-11-01", tz="UTC"))

    assert bars["timestamp"].iloc[-1] == pd.Timestamp(last_date, tz="UTC")
    since = pd.Timestamp("2012-11-01", tz="UTC")
    expected = aapl.loc[aapl["timestamp"].between(since, bars["timestamp"].iloc[-1])]
    assert bars_equal(bars, expected.reset_index(drop=True))


# -- intraday ------------------------------------------------------------------------------------------------


def test_minute_bars_keep_their_open_time_and_drop_the_open_minute(
    tmp_path: Path, server: AlpacaServer, session_minutes: pd.DataFrame
) -> None:
    server.add_bars("AAPL", "1Min", session_minutes)
    now = SESSION_OPEN + pd.Timedelta(minutes=200, seconds=30)  # the bar opened at +200 min is still open
    source, _ = make_source(tmp_path, server, now=now.isoformat())

    bars = source.fetch(source.instrument("AAPL"), MINUTE, None)

    assert bars_equal(bars, session_minutes.head(200))
    assert server.bar_requests()[0].params["timeframe"] == "1Min"


def test_minute_bars_since_a_time(
    tmp_path: Path, server: AlpacaServer, session_minutes: pd.DataFrame
) -> None:
    server.add_bars("AAPL", "1Min", session_minutes)
    server.page_size = 64
    since = SESSION_OPEN + pd.Timedelta(minutes=50)
    source, _ = make_source(tmp_path, server, now="2024-07-30T00:00:00Z")

    bars = source.fetch(source.instrument("AAPL"), MINUTE, since)

    assert bars_equal(bars, session_minutes.iloc[50:].reset_index(drop=True))
    assert len(server.bar_requests()) == math.ceil(340 / 64)


@pytest.mark.parametrize(
    ("timeframe", "alpaca_name"),
    [("5m", "5Min"), ("30m", "30Min"), ("1h", "1Hour"), ("4h", "4Hour"), ("1d", "1Day")],
)
def test_timeframes_are_asked_for_by_alpaca_name(
    tmp_path: Path, server: AlpacaServer, timeframe: str, alpaca_name: str
) -> None:
    source, _ = make_source(tmp_path, server)

    source.fetch(source.instrument("AAPL"), Timeframe.parse(timeframe), pd.Timestamp("2013-01-02", tz="UTC"))

    assert server.bar_requests()[0].params["timeframe"] == alpaca_name


def test_a_timeframe_alpaca_does_not_offer_is_refused(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    with pytest.raises(DataError, match="96m"):
        source.fetch(source.instrument("AAPL"), Timeframe.parse("96m"), None)
    assert server.bar_requests() == []
