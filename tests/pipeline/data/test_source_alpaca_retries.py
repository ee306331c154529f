"""The Alpaca source's retries, and its clients' one attempt per request within http_timeout_s."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import requests
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from pipeline.data.sources.alpaca_source import BoundedTradingClient, make_client
from pipeline.domain import bars_equal
from tests.fakes.alpaca_server import (
    DEFAULT_CASH,
    DEFAULT_KEY_ID,
    DEFAULT_SECRET_KEY,
    AlpacaServer,
)
from tests.pipeline.data import alpaca_source_helpers
from tests.pipeline.data.alpaca_source_helpers import (
    AFTER_LAST_BAR,
    assert_backoff,
    fetch_aapl,
    make_settings,
    make_source,
)

_no_outside_config = alpaca_source_helpers._no_outside_config  # settings from the test alone (autouse)
aapl = alpaca_source_helpers.aapl  # the real AAPL daily bars, served by the Alpaca stand-in
server = alpaca_source_helpers.server


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
