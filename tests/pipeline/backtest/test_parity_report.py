"""The parity report on a real paper runtime run over real BTC/USDT 1h bars: the runtime and the backtest of the
same sleeve agree fill for fill; another strategy setting, or a fill the runtime lost, shows up as disagreement."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from pipeline.backtest.parity import parity_report, write_parity
from pipeline.data.lake import Lake
from pipeline.domain import Instrument, Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from tests.pipeline.state.test_backup import btc_hours, paper_run, settings_at, sma_portfolio

BARS = 1200


@pytest.fixture(scope="module")
def traded(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = settings_at(tmp_path_factory.mktemp("parity"))
    bars = btc_hours(BARS)
    lake = Lake(settings.lake_dir)
    series = lake.register(Instrument.of("binance", "BTC/USDT"), Timeframe.parse("1h"), "files", False)
    lake.write(series, bars)
    paper_run(settings.state_url, bars, batch=5)
    return settings


def busiest_fill_day(settings: Settings) -> date:
    with StateStore.read_only(settings.state_url) as store:
        days = [f.at.date() for f in store.fills()]
    return max(set(days), key=days.count)


def test_runtime_and_backtest_agree_fill_for_fill(traded: Settings) -> None:
    day = busiest_fill_day(traded)
    with StateStore.read_only(traded.state_url) as store:
        report = parity_report(traded, store, sma_portfolio(), day)
        fills_that_day = [f for f in store.fills() if f.at.date() == day]
    [sleeve] = report.sleeves
    assert sleeve.sleeve == "main:BTC/USDT"
    assert sleeve.runtime_fills == sleeve.backtest_fills == sleeve.matched == len(fills_that_day) >= 2
    assert sleeve.missed == [] and sleeve.extra == []
    assert report.agreement == 1.0
    assert sleeve.price_diff_bps_max == 0.0
    assert sleeve.trades_matched == sleeve.runtime_trades == sleeve.backtest_trades
    path = write_parity(report, traded.data_dir)
    assert path == traded.data_dir / "reports" / day.isoformat() / "parity.json"
    stored = json.loads(path.read_text())
    assert stored["agreement"] == 1.0 and stored["sleeves"][0]["matched"] == len(fills_that_day)


def test_other_strategy_settings_show_missed_and_extra_fills(traded: Settings) -> None:
    day = busiest_fill_day(traded)
    with StateStore.read_only(traded.state_url) as store:
        report = parity_report(traded, store, sma_portfolio(fast=5, slow=60), day)
    [sleeve] = report.sleeves
    assert report.agreement < 1.0
    assert sleeve.missed or sleeve.extra
    assert sleeve.runtime_fills == len(sleeve.extra) + sleeve.matched
    assert sleeve.backtest_fills == len(sleeve.missed) + sleeve.matched


def test_a_fill_lost_by_the_runtime_is_reported_as_missed(traded: Settings, tmp_path: Path) -> None:
    day = busiest_fill_day(traded)
    copy = settings_at(tmp_path)
    source = Path(traded.state_url.removeprefix("sqlite:///"))
    target = Path(copy.state_url.removeprefix("sqlite:///"))
    target.parent.mkdir(parents=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    with StateStore.read_only(copy.state_url) as store:
        lost = next(f for f in store.fills() if f.at.date() == day)
    with sqlite3.connect(target) as conn:
        conn.execute("DELETE FROM fills WHERE fill_id = ?", (lost.fill_id,))
    with StateStore.read_only(copy.state_url) as store:
        report = parity_report(traded, store, sma_portfolio(), day)
    [sleeve] = report.sleeves
    assert [(m["at"], m["side"]) for m in sleeve.missed] == [(lost.at.isoformat(), lost.side)]
    assert sleeve.extra == []
    assert report.agreement == pytest.approx(sleeve.matched / (sleeve.matched + 1))
