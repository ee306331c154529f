"""CcxtSource against a fake Binance on 127.0.0.1, driven by the real ccxt client and real BTC/USDT bars."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import CcxtSource
from pipeline.domain import BAR_COLUMNS, TIMESTAMP_DTYPE, DataError, Instrument, Timeframe, bars_equal
from pipeline.retry import DEFAULT_JITTER
from pipeline.settings import Settings
from tests.conftest import shared_file
from tests.fakes.binance_server import FakeBinance, error_body

DATA = shared_file("binance_BTC-USDT_1m.parquet")
SLICE_ROWS = 3_500
ONE_MINUTE = Timeframe.parse("1m")
BACKOFF_S = 0.01

MakeSource = Callable[..., CcxtSource]
RETRY_AFTER_S = 1.0
"""What the fake Binance asks a client to wait after a 429 or 418 (its ``Retry-After`` header)."""


def assert_backoff(sleeps: list[float], expected: list[float]) -> None:
    """Each wait is the expected exponential backoff, shortened by at most the policy's jitter."""
    assert len(sleeps) == len(expected), sleeps
    for slept, wait in zip(sleeps, expected, strict=True):
        assert wait * (1 - DEFAULT_JITTER) <= slept <= wait, sleeps


def _slice_around_a_gap(bars: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` consecutive real bars with one of the file's missing-bar gaps in the middle."""
    steps = bars["timestamp"].diff()
    gaps = np.flatnonzero((steps > ONE_MINUTE.delta).to_numpy())
    middle = int(next(g for g in gaps if rows // 2 <= g <= len(bars) - rows // 2))
    return bars.iloc[middle - rows // 2 : middle + rows - rows // 2].reset_index(drop=True)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return _slice_around_a_gap(pd.read_parquet(DATA), SLICE_ROWS)


@pytest.fixture(scope="module")
def exchange(bars: pd.DataFrame) -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", bars)
        yield server


@pytest.fixture
def server(exchange: FakeBinance) -> Iterator[FakeBinance]:
    """The fake exchange with no faults, clock or requests left over from another test."""
    exchange.reset()
    yield exchange
    exchange.reset()


@pytest.fixture
def sleeps() -> list[float]:
    """The retry delays a source asked for (recorded, not slept)."""
    return []


@pytest.fixture
def make_source(server: FakeBinance, tmp_path: Path, sleeps: list[float]) -> Iterator[MakeSource]:
    made: list[CcxtSource] = []

    def make(now: pd.Timestamp, page_limit: int = 1000, **settings: object) -> CcxtSource:
        config = Settings(
            _env_file=None,
            data_dir=tmp_path,
            ccxt_exchange="binance",
            ccxt_rest_url=server.url,
            retry_backoff_s=BACKOFF_S,
            **settings,  # type: ignore[arg-type]
        )
        source = CcxtSource(config, FixedClock(now), sleep=sleeps.append, page_limit=page_limit)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def _after_close(bars: pd.DataFrame) -> pd.Timestamp:
    """The moment the last bar of ``bars`` closes."""
    return pd.Timestamp(bars["timestamp"].iloc[-1]) + ONE_MINUTE.delta


def _ms(stamp: pd.Timestamp) -> int:
    return int((pd.Timestamp(stamp) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))


BTC = Instrument.of("binance", "BTC/USDT", Decimal("0.01"), Decimal("0.00001"))


# --- instruments ----------------------------------------------------------------------------------


def test_instrument_carries_the_listing_increments(make_source: MakeSource, bars: pd.DataFrame) -> None:
    source = make_source(_after_close(bars))

    btc = source.instrument("btc/usdt")
    eth_btc = source.instrument("ETH/BTC")

    assert btc == BTC
    assert (eth_btc.venue, eth_btc.symbol) == ("binance", "ETH/BTC")
    assert (eth_btc.tick_size, eth_btc.lot_size) == (Decimal("0.00001"), Decimal("0.0001"))
    assert source.instrument("XRP/ETH").lot_size == Decimal(1)


def test_unknown_symbol_is_a_data_error_naming_it(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    source = make_source(_after_close(bars))

    with pytest.raises(DataError, match=r"symbol 'FOO/BAR' is not listed on binance"):
        source.instrument("FOO/BAR")
    with pytest.raises(DataError, match=r"FOO/BAR.*binance"):
        source.fetch(Instrument.of("binance", "FOO/BAR"), ONE_MINUTE, None)
    with pytest.raises(DataError, match=r"'not a symbol' is not valid"):
        source.instrument("not a symbol")
    assert server.requests_to("klines") == []


def test_market_list_is_retried(
    make_source: MakeSource, server: FakeBinance, sleeps: list[float], bars: pd.DataFrame
) -> None:
    server.fail_next(429, endpoint="exchangeInfo")

    assert make_source(_after_close(bars)).instrument("BTC/USDT") == BTC
    assert [r.status for r in server.requests_to("exchangeInfo")] == [429, 200]
    assert sleeps == [RETRY_AFTER_S]  # the venue's Retry-After, longer than the backoff


# --- pagination -----------------------------------------------------------------------------------


def test_pages_forward_and_returns_the_bars_exactly(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    source = make_source(_after_close(bars), page_limit=1000)
    pages: list[int] = []

    fetched = source.fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0], progress=pages.append)

    klines = server.requests_to("klines")
    assert len(klines) == 4
    assert pages == [1000, 1000, 1000, 500]
    expected_starts = [_ms(bars["timestamp"].iloc[0])] + [
        _ms(bars["timestamp"].iloc[k * 1000 - 1]) + ONE_MINUTE.millis for k in (1, 2, 3)
    ]
    assert [r.int_param("startTime") for r in klines] == expected_starts
    assert {(r.params["symbol"], r.params["interval"], r.params["limit"]) for r in klines} == {
        ("BTCUSDT", "1m", "1000")
    }
    assert list(fetched.columns) == list(BAR_COLUMNS)
    assert str(fetched["timestamp"].dtype) == TIMESTAMP_DTYPE
    assert fetched["timestamp"].is_monotonic_increasing and fetched["timestamp"].is_unique
    assert bars_equal(fetched, bars)
    for column in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(fetched[column].to_numpy(), bars[column].to_numpy())


def test_without_since_reads_from_the_first_bar(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    fetched = make_source(_after_close(bars)).fetch(BTC, ONE_MINUTE, None)

    assert server.requests_to("klines")[0].int_param("startTime") == 0
    assert bars_equal(fetched, bars)


def test_since_inside_the_history_returns_bars_from_there(
    make_source: MakeSource, bars: pd.DataFrame
) -> None:
    since = bars["timestamp"].iloc[1234] - pd.Timedelta(seconds=20)

    fetched = make_source(_after_close(bars)).fetch(BTC, ONE_MINUTE, since)

    assert bars_equal(fetched, bars.iloc[1234:].reset_index(drop=True))


def test_still_open_candle_is_dropped(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    now = bars["timestamp"].iloc[1500] + pd.Timedelta(seconds=30)
    server.set_now(now)

    fetched = make_source(now).fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    served = server.requests_to("klines")
    assert sum(r.rows for r in served) == 1501  # the venue served the open candle ...
    assert fetched["timestamp"].iloc[-1] == bars["timestamp"].iloc[1499]  # ... and it is not in the frame
    assert bars_equal(fetched, bars.iloc[:1500].reset_index(drop=True))


def test_stops_at_the_end_of_the_exchange_history(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    later = _after_close(bars) + pd.Timedelta(days=2)

    fetched = make_source(later).fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[2000])

    assert [r.rows for r in server.requests_to("klines")] == [1000, 500, 0]
    assert bars_equal(fetched, bars.iloc[2000:].reset_index(drop=True))


# --- transient failures ---------------------------------------------------------------------------


def test_rate_limit_then_success(
    make_source: MakeSource, server: FakeBinance, sleeps: list[float], bars: pd.DataFrame
) -> None:
    server.fail_next(429)

    fetched = make_source(_after_close(bars)).fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    assert [r.status for r in server.requests_to("klines")] == [429, 200, 200, 200, 200]
    assert sleeps == [RETRY_AFTER_S]  # the venue's Retry-After, longer than the backoff
    assert bars_equal(fetched, bars)


def test_timeout_then_success(
    make_source: MakeSource,
    server: FakeBinance,
    sleeps: list[float],
    bars: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.fail_next(delay_s=1.5)
    source = make_source(_after_close(bars), http_timeout_s=0.5)

    with caplog.at_level(logging.WARNING, logger="pipeline.retry"):
        fetched = source.fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    klines = server.requests_to("klines")
    assert [r.delay_s for r in klines] == [1.5, 0.0, 0.0, 0.0, 0.0]
    assert klines[0].params == klines[1].params  # the same page, asked again
    assert_backoff(sleeps, [BACKOFF_S])
    assert "RequestTimeout" in caplog.text
    assert bars_equal(fetched, bars)


@pytest.mark.parametrize(
    ("status", "seen_as"),
    [(500, "OperationFailed"), (502, "ExchangeNotAvailable"), (503, "ExchangeNotAvailable")],
)
def test_server_error_then_success(
    make_source: MakeSource,
    server: FakeBinance,
    sleeps: list[float],
    bars: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
    status: int,
    seen_as: str,
) -> None:
    server.fail_next(status)

    with caplog.at_level(logging.WARNING, logger="pipeline.retry"):
        fetched = make_source(_after_close(bars)).fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    assert [r.status for r in server.requests_to("klines")][:2] == [status, 200]
    assert_backoff(sleeps, [BACKOFF_S])
    assert seen_as in caplog.text
    assert bars_equal(fetched, bars)


def test_retries_exhausted_is_a_clear_error(
    make_source: MakeSource, server: FakeBinance, sleeps: list[float], bars: pd.DataFrame
) -> None:
    server.fail_next(503, times=10)
    source = make_source(_after_close(bars), max_retries=2)

    with pytest.raises(RuntimeError, match=r"binance 1m bars of BTC/USDT from .* failed after 3 attempts"):
        source.fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    assert len(server.requests_to("klines")) == 3
    assert_backoff(sleeps, [BACKOFF_S, 2 * BACKOFF_S])


def test_market_list_retries_exhausted_is_a_clear_error(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    server.fail_next(503, times=10, endpoint="exchangeInfo")

    with pytest.raises(RuntimeError, match=r"binance market list failed after 2 attempts"):
        make_source(_after_close(bars), max_retries=1).instrument("BTC/USDT")


# --- rejections -----------------------------------------------------------------------------------


def test_rejected_symbol_is_a_data_error_and_not_retried(
    make_source: MakeSource, server: FakeBinance, sleeps: list[float], bars: pd.DataFrame
) -> None:
    server.fail_next(400, body=error_body(-1121, "Invalid symbol."))

    with pytest.raises(DataError, match=r"binance does not know symbol 'BTC/USDT'.*Invalid symbol"):
        make_source(_after_close(bars)).fetch(BTC, ONE_MINUTE, bars["timestamp"].iloc[0])

    assert len(server.requests_to("klines")) == 1
    assert sleeps == []


def test_rejected_credentials_are_a_data_error(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    server.fail_next(401, body=error_body(-2015, "Invalid API-key, IP, or permissions for action."))

    with pytest.raises(DataError, match=r"binance refused the credentials") as raised:
        make_source(_after_close(bars), ccxt_api_key="k-123", ccxt_api_secret="s-456").fetch(
            BTC, ONE_MINUTE, bars["timestamp"].iloc[0]
        )

    assert "s-456" not in str(raised.value)


def test_unoffered_timeframe_is_a_data_error(
    make_source: MakeSource, server: FakeBinance, bars: pd.DataFrame
) -> None:
    with pytest.raises(DataError, match=r"timeframe '2m' is not offered by binance"):
        make_source(_after_close(bars)).fetch(BTC, Timeframe.parse("2m"), None)
    assert server.requests_to("klines") == []


def test_instrument_of_another_venue_is_a_data_error(make_source: MakeSource, bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"venue 'kraken'.*'binance'"):
        make_source(_after_close(bars)).fetch(Instrument.of("kraken", "BTC/USDT"), ONE_MINUTE, None)


def test_unknown_exchange_is_a_data_error_naming_it(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)

    with pytest.raises(DataError, match=r"exchange 'nosuchexchange' is not supported by ccxt"):
        CcxtSource(settings, FixedClock("2024-01-01"), exchange_id="nosuchexchange")
