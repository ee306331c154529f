"""The Alpaca source, driven through the real alpaca-py client against a local Alpaca stand-in.

The stand-in serves real AAPL daily bars stamped the way Alpaca stamps them (midnight New York time) and real
minute bars relabelled as a stock's regular session; the source must bring them back as canonical frames.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from pipeline.clock import FixedClock
from pipeline.data.sources.alpaca_source import AlpacaSource, BoundedTradingClient, make_client
from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError, Instrument, Timeframe, bars_equal
from pipeline.retry import DEFAULT_JITTER
from pipeline.settings import Settings
from tests.conftest import SHARED_DATA
from tests.fakes.alpaca_server import (
    DEFAULT_CASH,
    DEFAULT_KEY_ID,
    DEFAULT_SECRET_KEY,
    AlpacaServer,
    alpaca_daily_stamps,
)

DATA = SHARED_DATA
AAPL_DAILY = DATA / "quandlwiki_AAPL_1d.parquet"
BTC_MINUTES = DATA / "binance_BTC-USDT_1m.parquet"

AFTER_LAST_BAR = "2013-03-04T12:00:00Z"  # the file ends with the session of Friday 2013-03-01
DAILY = Timeframe.parse("1d")
MINUTE = Timeframe.parse("1m")
SESSION_OPEN = pd.Timestamp("2024-07-29T13:30:00Z")  # 09:30 in New York (EDT)


@pytest.fixture(autouse=True)
def _no_outside_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come from the test alone: no TRADEFORGE_ variables, no .env in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("TRADEFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return pd.read_parquet(AAPL_DAILY)


@pytest.fixture(scope="module")
def session_minutes() -> pd.DataFrame:
    """390 real one-minute bars relabelled as one regular NYSE session (09:30-16:00 New York)."""
    start = pd.Timestamp("2024-07-29", tz="UTC")
    end = start + pd.Timedelta(minutes=390)
    frame = pd.read_parquet(BTC_MINUTES, filters=[("timestamp", ">=", start), ("timestamp", "<", end)])
    assert len(frame) == 390
    frame["timestamp"] = (SESSION_OPEN + pd.to_timedelta(range(390), unit="min")).astype(TIMESTAMP_DTYPE)
    return frame.reset_index(drop=True)


@pytest.fixture
def server(aapl: pd.DataFrame) -> Iterator[AlpacaServer]:
    with AlpacaServer() as fake:
        fake.add_bars("AAPL", "1Day", alpaca_daily_stamps(aapl))
        yield fake


def assert_backoff(sleeps: list[float], expected: list[float]) -> None:
    """Each wait is the configured exponential backoff, shortened by at most the retry policy's jitter."""
    assert len(sleeps) == len(expected), sleeps
    for slept, wait in zip(sleeps, expected, strict=True):
        assert wait * (1 - DEFAULT_JITTER) <= slept <= wait, sleeps


def make_settings(tmp_path: Path, server: AlpacaServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "alpaca_api_key": "k",
        "alpaca_api_secret": "s",
        "alpaca_data_url": server.url,
        "retry_backoff_s": 0.01,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_source(
    tmp_path: Path, server: AlpacaServer, now: str = AFTER_LAST_BAR, **overrides: Any
) -> tuple[AlpacaSource, list[float]]:
    sleeps: list[float] = []
    source = AlpacaSource(make_settings(tmp_path, server, **overrides), FixedClock(now), sleep=sleeps.append)
    return source, sleeps


def fetch_aapl(source: AlpacaSource, since: pd.Timestamp | None = None) -> pd.DataFrame:
    return source.fetch(source.instrument("AAPL"), DAILY, since)


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


# -- retries -------------------------------------------------------------------------------------------------


def test_rate_limit_is_retried_with_the_configured_backoff(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame
) -> None:
    server.fail_next(status=429)
    source, sleeps = make_source(tmp_path, server)

    bars = fetch_aapl(source)

    assert bars_equal(bars, aapl)
    assert_backoff(sleeps, [0.01])  # one retry policy: ours, not alpaca-py's fixed 3 s sleeps
    assert len(server.bar_requests()) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_is_retried(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame, status: int
) -> None:
    server.fail_next(status=status)
    source, sleeps = make_source(tmp_path, server)

    assert bars_equal(fetch_aapl(source), aapl)
    assert_backoff(sleeps, [0.01])
    assert len(server.bar_requests()) == 2


def test_slow_answer_times_out_and_is_retried(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame
) -> None:
    server.delay_next(1.0)
    source, sleeps = make_source(tmp_path, server, http_timeout_s=0.3)

    assert bars_equal(fetch_aapl(source), aapl)
    assert_backoff(sleeps, [0.01])


def test_retries_give_up_after_max_retries(tmp_path: Path, server: AlpacaServer) -> None:
    server.fail_next(status=503, times=3)
    source, sleeps = make_source(tmp_path, server, max_retries=2)

    with pytest.raises(RuntimeError, match=r"AAPL.*failed after 3 attempts"):
        fetch_aapl(source)
    assert_backoff(sleeps, [0.01, 0.02])


def test_unreachable_venue_is_retried_then_reported(tmp_path: Path, server: AlpacaServer) -> None:
    with AlpacaServer() as gone:
        url = gone.url  # nothing listens there once the block has closed the server
    source, sleeps = make_source(tmp_path, server, alpaca_data_url=url, max_retries=1)

    with pytest.raises(RuntimeError, match="failed after 2 attempts"):
        fetch_aapl(source)
    assert_backoff(sleeps, [0.01])


# -- the clients: one attempt per request, within http_timeout_s ---------------------------------------------


def daily_request() -> StockBarsRequest:
    return StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame(1, TimeFrameUnit.Day),
                            start=pd.Timestamp("2013-01-02", tz="UTC").to_pydatetime(),
                            end=pd.Timestamp(AFTER_LAST_BAR).to_pydatetime(), feed=DataFeed.IEX)


def test_the_data_client_pages_through_alpaca_pys_own_requests(
    tmp_path: Path, server: AlpacaServer, aapl: pd.DataFrame
) -> None:
    server.page_size = 16
    client = make_client(make_settings(tmp_path, server))

    result = client.get_stock_bars(daily_request())

    served = aapl.loc[aapl["timestamp"] >= pd.Timestamp("2013-01-02", tz="UTC")]
    assert isinstance(result, dict) and len(result["AAPL"]) == len(served)  # raw bars, every page
    requests_made = server.bar_requests()
    assert len(requests_made) == math.ceil(len(served) / 16)
    assert all(r.had_key_headers and r.params["symbols"] == "AAPL" and r.params["feed"] == "iex"
               for r in requests_made)
    assert all("page_token" in r.params for r in requests_made[1:])


@pytest.mark.parametrize("status", [429, 504])  # the answers alpaca-py itself retries, three times 3 s apart
def test_the_data_client_asks_once_and_leaves_retrying_to_the_retry_policy(
    tmp_path: Path, server: AlpacaServer, status: int
) -> None:
    server.fail_next(status=status)
    client = make_client(make_settings(tmp_path, server))

    with pytest.raises(APIError) as caught:
        client.get_stock_bars(daily_request())

    assert caught.value.status_code == status
    assert len(server.bar_requests()) == 1


def test_the_data_client_gives_up_on_an_answer_slower_than_http_timeout_s(
    tmp_path: Path, server: AlpacaServer
) -> None:
    server.delay_next(1.0)
    client = make_client(make_settings(tmp_path, server, http_timeout_s=0.2))

    with pytest.raises(requests.Timeout):
        client.get_stock_bars(daily_request())
    assert len(server.bar_requests()) == 1


def test_the_trading_client_asks_once_within_the_timeout(server: AlpacaServer) -> None:
    client = BoundedTradingClient(DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, timeout_s=0.2, url_override=server.url)

    assert Decimal(str(client.get_account().cash)) == DEFAULT_CASH
    server.fail_next(status=429, endpoint="account")
    with pytest.raises(APIError) as caught:
        client.get_account()
    assert caught.value.status_code == 429
    server.delay_next(1.0, endpoint="account")
    with pytest.raises(requests.Timeout):
        client.get_account()
    assert len(server.requests_to("account")) == 3


@pytest.mark.parametrize(("paper", "url"), [(True, BaseURL.TRADING_PAPER.value), (False, BaseURL.TRADING_LIVE.value)])
def test_the_trading_client_speaks_to_the_paper_or_the_live_endpoint(paper: bool, url: str) -> None:
    client = BoundedTradingClient("k", "s", timeout_s=0.5, paper=paper)

    assert client.http.base_url == url and client.http.timeout_s == 0.5
    assert client.http.api_version == "v2"


def test_the_trading_client_keeps_an_overridden_endpoint(server: AlpacaServer) -> None:
    client = BoundedTradingClient(DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, timeout_s=0.5, paper=False,
                                  url_override=server.url)

    assert Decimal(str(client.get_account().cash)) == DEFAULT_CASH
    assert server.requests_to("account")[0].had_key_headers


# -- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feed", ["iex", "sip", "delayed_sip", "otc"])
def test_feed_setting_reaches_the_request(tmp_path: Path, server: AlpacaServer, feed: str) -> None:
    source, _ = make_source(tmp_path, server, alpaca_feed=feed, alpaca_data_url=server.url + "/")

    fetch_aapl(source, pd.Timestamp("2013-01-02", tz="UTC"))

    assert [r.params["feed"] for r in server.bar_requests()] == [feed]


@pytest.mark.parametrize(
    ("key", "secret", "named", "not_named"),
    [
        (None, None, ["TRADEFORGE_ALPACA_API_KEY", "TRADEFORGE_ALPACA_API_SECRET"], []),
        (None, "s", ["TRADEFORGE_ALPACA_API_KEY"], ["TRADEFORGE_ALPACA_API_SECRET"]),
        ("k", None, ["TRADEFORGE_ALPACA_API_SECRET"], ["TRADEFORGE_ALPACA_API_KEY"]),
        ("k", "  ", ["TRADEFORGE_ALPACA_API_SECRET"], ["TRADEFORGE_ALPACA_API_KEY"]),
    ],
)
def test_missing_keys_name_the_variables_to_set(
    tmp_path: Path,
    server: AlpacaServer,
    key: str | None,
    secret: str | None,
    named: list[str],
    not_named: list[str],
) -> None:
    source, _ = make_source(tmp_path, server, alpaca_api_key=key, alpaca_api_secret=secret)

    with pytest.raises(DataError) as caught:
        fetch_aapl(source)
    message = str(caught.value)
    assert all(name in message for name in named)
    assert not any(name in message for name in not_named)
    assert server.bar_requests() == []


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "TRADEFORGE_ALPACA_API_KEY"), (403, "TRADEFORGE_ALPACA_FEED")]
)
def test_refused_keys_or_feed_are_reported_without_retrying(
    tmp_path: Path, server: AlpacaServer, status: int, hint: str
) -> None:
    server.fail_next(status=status)
    source, sleeps = make_source(tmp_path, server)

    with pytest.raises(DataError, match=hint):
        fetch_aapl(source)
    assert sleeps == []


def test_keys_never_reach_logs_or_errors(
    tmp_path: Path, server: AlpacaServer, caplog: pytest.LogCaptureFixture
) -> None:
    key, secret = "key-id-7f3a91", "secret-9b1c55"
    server.fail_next(status=429)
    server.fail_next(status=401)
    source, _ = make_source(tmp_path, server, alpaca_api_key=key, alpaca_api_secret=secret)

    with caplog.at_level(logging.DEBUG), pytest.raises(DataError) as caught:
        fetch_aapl(source)

    assert server.bar_requests()[0].had_key_headers
    for text in (caplog.text, str(caught.value), repr(caught.value)):
        assert key not in text and secret not in text


# -- symbols -------------------------------------------------------------------------------------------------


def test_instrument_is_a_us_stock_on_the_nyse_calendar(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    instrument = source.instrument(" aapl ")

    assert instrument == Instrument.of("alpaca", "AAPL")
    assert instrument.asset_class is AssetClass.STOCK and instrument.calendar == "XNYS"
    assert source.name == "alpaca"


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT:USDT"])
def test_crypto_symbols_are_refused(tmp_path: Path, server: AlpacaServer, symbol: str) -> None:
    source, _ = make_source(tmp_path, server)

    with pytest.raises(DataError, match=symbol):
        source.instrument(symbol)
    with pytest.raises(DataError, match="US stock"):
        source.fetch(Instrument.of("binance", symbol), DAILY, None)
    assert server.bar_requests() == []


def test_malformed_symbol_is_refused(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    with pytest.raises(DataError, match="AA PL"):
        source.instrument("AA PL")


def test_unknown_symbol_is_a_data_error_naming_it(tmp_path: Path, server: AlpacaServer) -> None:
    source, sleeps = make_source(tmp_path, server)

    with pytest.raises(DataError, match="ZZZZQ"):
        source.fetch(source.instrument("ZZZZQ"), DAILY, None)
    assert len(server.bar_requests()) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 404, 422])
def test_symbol_rejected_by_alpaca_is_a_data_error_naming_it(
    tmp_path: Path, server: AlpacaServer, status: int
) -> None:
    server.fail_next(status=status)
    source, sleeps = make_source(tmp_path, server)

    with pytest.raises(DataError, match=f"'AAPL'.*HTTP {status}"):
        fetch_aapl(source)
    assert sleeps == []
