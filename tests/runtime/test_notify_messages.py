"""The notification texts: fills, breaker trips and releases, errors, start and stop, plain and in UTC."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from decimal import Decimal

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from runtime.notify import (
    breaker_event_message,
    breaker_message,
    error_message,
    fill_message,
    start_message,
    stop_message,
)
from tests.conftest import REPO, shared_file

AT = datetime.fromisoformat("2026-11-21T12:00:00+00:00")


def test_messages_are_plain_text_with_exact_amounts_and_utc_times() -> None:
    fill = fill_message(
        "BTC/USDT",
        "buy",
        Decimal("0.01500"),
        Decimal("64210.50"),
        AT,
        fee=Decimal("0.963"),
        fee_currency="USDT",
        venue="paper",
        strategy="sma_cross",
        reason="entry",
    )
    assert fill == (
        "Fill: BUY 0.01500 BTC/USDT @ 64,210.50\n"
        "fee 0.963 USDT | paper | strategy sma_cross\n"
        "reason: entry\n"
        "2026-11-21 12:00:00 UTC"
    )
    breaker = breaker_message("max_drawdown", AT, value=Decimal("0.1250"), limit=Decimal("0.10"))
    assert breaker.splitlines()[:2] == ["Circuit breaker tripped: max_drawdown", "value 0.1250 | limit 0.10"]
    error = error_message("feed BTC/USDT", ConnectionError("exchange unreachable"), AT, action="retrying")
    assert error.splitlines()[0] == "Error in feed BTC/USDT: ConnectionError: exchange unreachable"
    started = start_message("paper", AT, broker="paper", symbols=["BTC/USDT", "ETH/USDT"], equity=Decimal("1E+4"))
    assert "symbols: BTC/USDT, ETH/USDT" in started and "equity 10,000" in started
    stopped = stop_message("operator request", pd.Timestamp("2026-11-21 13:00", tz="Europe/Paris"))
    assert stopped == "tradeforge runtime stopped: operator request\n2026-11-21 12:00:00 UTC"


def test_a_breaker_trip_says_how_its_rule_releases() -> None:
    drawdown = breaker_message("max_drawdown", AT, value=Decimal("0.25"), limit=Decimal("0.20"), strategy="main")
    assert drawdown == (
        "Circuit breaker tripped: max_drawdown\n"
        "value 0.25 | limit 0.20 | strategy main\n"
        "new entries are blocked until an operator resets the breaker\n"
        "2026-11-21 12:00:00 UTC"
    )
    cooled = breaker_message("consecutive_losses", AT, cooldown_bars=24)
    assert cooled.splitlines()[1] == (
        "new entries are blocked until an operator resets the breaker or the 24-bar cool-down ends"
    )
    for daily in ("daily_loss", "trades_per_day"):
        assert breaker_message(daily, AT, cooldown_bars=24).splitlines()[1] == (
            "new entries are blocked until the next trading day"
        )
        assert breaker_message(daily, AT, daily_release=False).splitlines()[1] == (
            "new entries are blocked until an operator resets the breaker"
        )
    assert breaker_message("paused", AT).splitlines()[1] == "new entries are blocked until an operator resumes trading"
    assert breaker_message("max_drawdown", AT, then="flattening").splitlines()[1] == "flattening"


def test_a_breaker_release_is_a_released_message() -> None:
    released = breaker_message(
        "daily_loss",
        AT,
        value=Decimal("0.06"),
        limit=Decimal("0.05"),
        action="release",
        released_by="new_day",
        bars_tripped=5,
    )
    assert released == (
        "Circuit breaker released: daily_loss\n"
        "value 0.06 | limit 0.05\n"
        "released at the next trading day after 5 bars\n"
        "new entries are allowed again\n"
        "2026-11-21 12:00:00 UTC"
    )
    assert (
        breaker_message("max_drawdown", AT, action="release", released_by="cooldown", bars_tripped=1).splitlines()[1]
        == "released by the cool-down after 1 bar"
    )
    assert breaker_message("max_drawdown", AT, action="release", released_by="operator").splitlines()[1:3] == [
        "released by an operator's reset",
        "new entries are allowed again",
    ]
    assert breaker_message("max_drawdown", AT, action="release").splitlines()[1] == "new entries are allowed again"
    with pytest.raises(ValueError, match="'trip' or 'release'"):
        breaker_message("max_drawdown", AT, action="entries stay blocked")


def test_engine_breaker_events_become_breaker_messages() -> None:
    events = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2026-11-21 12:00", "2026-11-22 00:00"], utc=True),
            "rule": ["daily_loss", "daily_loss"],
            "value": [0.0612345, 0.0612345],
            "threshold": [0.05, 0.05],
            "action": ["trip", "release"],
            "released_by": ["", "new_day"],
            "bars_tripped": [0, 12],
        }
    )
    trip, release = (breaker_event_message(row._asdict(), strategy="main") for row in events.itertuples(index=False))

    assert trip == (
        "Circuit breaker tripped: daily_loss\n"
        "value 0.06123 | limit 0.05 | strategy main\n"
        "new entries are blocked until the next trading day\n"
        "2026-11-21 12:00:00 UTC"
    )
    assert release == (
        "Circuit breaker released: daily_loss\n"
        "value 0.06123 | limit 0.05 | strategy main\n"
        "released at the next trading day after 12 bars\n"
        "new entries are allowed again\n"
        "2026-11-22 00:00:00 UTC"
    )
    portfolio = {"timestamp": AT, "rule": "portfolio_drawdown", "value": 0.25, "threshold": 0.2, "action": "trip",
                 "released_by": "", "bars_tripped": 0}
    assert breaker_event_message(portfolio, strategy="portfolio", cooldown_bars=24).splitlines()[1:3] == [
        "value 0.25 | limit 0.2 | strategy portfolio",
        "new entries are blocked until an operator resets the breaker or the 24-bar cool-down ends",
    ]


def test_every_breaker_event_of_a_real_run_becomes_its_breaker_message() -> None:
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-2000:].reset_index(drop=True)
    engine = {"max_position": 1.0, "daily_loss": 0.01, "max_trades_per_day": 4, "max_consecutive_losses": 3,
              "max_drawdown": None, "breaker_cooldown_bars": 12}
    config = PortfolioConfig.model_validate({
        "cash": 100_000,
        "strategies": [{"id": "main", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1h",
                        "allocation": 1.0, "params": {"fast": "3", "slow": "8"}, "engine": engine}],
    })
    events = run_portfolio(config, lambda symbol, tf: hours).sleeves["main:BTC/USDT"].breaker_events
    assert {"new_day", "cooldown"} <= set(events["released_by"])

    for row in events.itertuples(index=False):
        lines = breaker_event_message(row._asdict(), strategy="main", cooldown_bars=12).splitlines()
        assert lines[0] == f"Circuit breaker {'tripped' if row.action == 'trip' else 'released'}: {row.rule}"
        assert lines[1] == f"value {row.value:.4g} | limit {row.threshold:.4g} | strategy main"
        assert lines[-1] == row.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC")
        if row.action == "trip":
            daily = row.rule in ("daily_loss", "trades_per_day")
            assert lines[2] == "new entries are blocked " + (
                "until the next trading day" if daily
                else "until an operator resets the breaker or the 12-bar cool-down ends")
        else:
            how = "at the next trading day" if row.released_by == "new_day" else "by the cool-down"
            assert lines[2] == f"released {how} after {row.bars_tripped} bar{'' if row.bars_tripped == 1 else 's'}"
            assert lines[3] == "new entries are allowed again"


def test_the_message_texts_load_without_the_telegram_client_library() -> None:
    check = (
        "import sys; from runtime.notify import breaker_event_message, fill_message; "
        "loaded = sorted(m for m in ('telegram', 'httpx', 'tenacity') if m in sys.modules); print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"  # a runtime without Telegram never pays for it


def test_a_naive_time_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        stop_message("done", datetime(2026, 11, 21, 12, 0))
