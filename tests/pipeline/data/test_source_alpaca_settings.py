"""The Alpaca source's settings: the feed, and the API keys (missing, refused, never shown)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline.domain import DataError
from tests.fakes.alpaca_server import AlpacaServer
from tests.pipeline.data import alpaca_source_helpers
from tests.pipeline.data.alpaca_source_helpers import fetch_aapl, make_source

_no_outside_config = alpaca_source_helpers._no_outside_config  # settings from the test alone (autouse)
aapl = alpaca_source_helpers.aapl  # the real AAPL daily bars, served by the Alpaca stand-in
server = alpaca_source_helpers.server


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
