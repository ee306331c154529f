"""Multi-strategy portfolios: validated files, sub-ledgers that sum to the portfolio, portfolio caps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.backtest.portfolio import PortfolioConfig, load_portfolio, run_portfolio
from pipeline.domain import DataError
from pipeline.engine import EngineConfig, run
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file
from tradeforge_cli.app import app

TOML = """
cash = 100000

[caps]
max_gross_exposure = {gross}
max_drawdown = {drawdown}

[[strategies]]
id = "btc-trend"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5
params = {{ fast = 10, slow = 30 }}
engine = {{ max_position = 1.0, max_consecutive_losses = 1000, daily_loss = 0.5, max_drawdown = 0.6 }}

[[strategies]]
id = "eth-rsi"
strategy = "rsi_reversion"
symbols = ["ETH/USDT"]
timeframe = "1h"
allocation = 0.3
engine = {{ max_position = 1.0, daily_loss = 0.5, max_drawdown = 0.6 }}
"""


@pytest.fixture(scope="module")
def hourly() -> dict[str, pd.DataFrame]:
    start, end = pd.Timestamp("2021-01-01", tz="UTC"), pd.Timestamp("2021-07-01", tz="UTC")
    frames = {}
    for symbol, name in (("BTC/USDT", "binance_BTC-USDT_1h.parquet"), ("ETH/USDT", "binance_ETH-USDT_1h.parquet")):
        bars = pd.read_parquet(shared_file(name))
        frames[symbol] = bars.loc[(bars["timestamp"] >= start) & (bars["timestamp"] < end)].reset_index(drop=True)
    return frames


def _write(tmp_path: Path, text: str, name: str = "portfolio.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _config(tmp_path: Path, gross: float = 2.0, drawdown: float = 0.9) -> PortfolioConfig:
    return load_portfolio(_write(tmp_path, TOML.format(gross=gross, drawdown=drawdown)))


def test_toml_and_yaml_files_load_to_the_same_portfolio(tmp_path: Path) -> None:
    from_toml = _config(tmp_path)
    yaml_text = """
cash: 100000
caps: {max_gross_exposure: 2.0, max_drawdown: 0.9}
strategies:
  - {id: btc-trend, strategy: sma_cross, symbols: [BTC/USDT], timeframe: 1h, allocation: 0.5,
     params: {fast: 10, slow: 30},
     engine: {max_position: 1.0, max_consecutive_losses: 1000, daily_loss: 0.5, max_drawdown: 0.6}}
  - {id: eth-rsi, strategy: rsi_reversion, symbols: [ETH/USDT], timeframe: 1h, allocation: 0.3,
     engine: {max_position: 1.0, daily_loss: 0.5, max_drawdown: 0.6}}
"""
    assert load_portfolio(_write(tmp_path, yaml_text, "portfolio.yaml")) == from_toml


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("allocation = 0.3", "allocation = 0.6"), "allocations add up to 1.1"),
        (('strategy = "rsi_reversion"', 'strategy = "nosuch"'), "strategy 'nosuch' is not known"),
        (('symbols = ["ETH/USDT"]', 'symbols = ["ETH USDT"]'), "symbol 'ETH USDT' is not valid"),
        (('symbols = ["ETH/USDT"]', "symbols = []"), "strategy 'eth-rsi': symbols []"),
        (("{ max_position = 1.0, daily_loss", "{ max_position = -1.0, daily_loss"), "max_position"),
        (("{ max_position = 1.0, daily_loss", "{ maxposition = 1.0, daily_loss"), "maxposition"),
        (('id = "eth-rsi"', 'id = "btc-trend"'), "ids must be unique"),
        (('timeframe = "1h"\nallocation = 0.3', 'timeframe = "7m"\nallocation = 0.3'), "timeframe '7m'"),
        (("cash = 100000", "cash = 100000\nleverage = 3"), "leverage"),
        (("[caps]", "[caps\n"), "is not valid"),
    ],
)
def test_bad_portfolio_files_are_refused_naming_the_problem(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = TOML.format(gross=1.0, drawdown=0.5)
    assert change[0] in text
    text = text.replace(change[0], change[1], 1)
    with pytest.raises(DataError, match=r"portfolio file|strategy|symbol|timeframe") as caught:
        load_portfolio(_write(tmp_path, text))
    assert message in str(caught.value)


def test_missing_or_unsupported_portfolio_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_portfolio(tmp_path / "nope.toml")
    with pytest.raises(DataError, match=r"must be \.toml, \.yaml or \.yml"):
        load_portfolio(_write(tmp_path, "cash = 1", "portfolio.ini"))


def test_sub_ledgers_always_sum_to_the_portfolio(tmp_path: Path, hourly: dict[str, pd.DataFrame]) -> None:
    result = run_portfolio(_config(tmp_path), lambda symbol, tf: hourly[symbol])
    curve = result.equity.set_index("timestamp")
    total = pd.Series(20_000.0, index=curve.index)  # the unallocated 20 %
    cash = pd.Series(20_000.0, index=curve.index)
    for sleeve in result.sleeves.values():
        equity = sleeve.equity.set_index("timestamp")
        total += equity["equity"].reindex(curve.index).ffill()
        cash += equity["cash"].reindex(curve.index).ffill()
    np.testing.assert_allclose(curve["equity"], total, rtol=1e-12)
    np.testing.assert_allclose(curve["cash"], cash, rtol=1e-12)
    assert all(len(s.trades) > 5 for s in result.sleeves.values())


def test_a_single_sleeve_trades_exactly_like_a_plain_backtest(tmp_path: Path, hourly: dict[str, pd.DataFrame]) -> None:
    text = """
cash = 50000
[[strategies]]
id = "solo"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 1.0
engine = { max_position = 0.8, stop_loss = 0.03 }
"""
    result = run_portfolio(load_portfolio(_write(tmp_path, text)), lambda symbol, tf: hourly[symbol])
    bars = hourly["BTC/USDT"]
    targets = REGISTRY.build("sma_cross").targets(bars)
    plain = run(bars, targets.exposure, targets.reason, targets.reasons,
                EngineConfig(cash=50_000, max_position=0.8, stop_loss=0.03))
    sleeve = result.sleeves["solo:BTC/USDT"]
    pd.testing.assert_frame_equal(sleeve.fills, plain.fills, check_exact=True)
    pd.testing.assert_frame_equal(sleeve.equity, plain.equity, check_exact=True)


def test_gross_exposure_cap_limits_the_sum_of_positions(tmp_path: Path, hourly: dict[str, pd.DataFrame]) -> None:
    uncapped = run_portfolio(_config(tmp_path, gross=2.0), lambda symbol, tf: hourly[symbol])
    capped = run_portfolio(_config(tmp_path, gross=0.4), lambda symbol, tf: hourly[symbol])
    assert uncapped.equity["gross_exposure"].max() > 0.6
    assert capped.equity["gross_exposure"].max() <= 0.4 * 1.1  # room is measured at the previous close
    resized = pd.concat([s.rejections for s in capped.sleeves.values()])
    assert (resized["what"] == "resized: max position").any()


def test_portfolio_drawdown_pauses_every_strategy(tmp_path: Path, hourly: dict[str, pd.DataFrame]) -> None:
    result = run_portfolio(_config(tmp_path, drawdown=0.03), lambda symbol, tf: hourly[symbol])
    assert result.events["rule"].tolist() == ["portfolio_drawdown"]
    tripped_at = result.events["timestamp"].iloc[0]
    for sleeve in result.sleeves.values():
        later = sleeve.fills[sleeve.fills["timestamp"] > tripped_at]
        assert (later["side"] == "sell").all()  # only exits after the trip
        blocked = sleeve.rejections[sleeve.rejections["timestamp"] > tripped_at]
        assert blocked.empty or (blocked["what"] == "blocked: circuit breaker tripped").all()


def test_portfolio_backtest_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         hourly: dict[str, pd.DataFrame]) -> None:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    for symbol, bars in hourly.items():
        path = tmp_path / f"{symbol.replace('/', '-')}.parquet"
        bars.to_parquet(path)
        ingested = runner.invoke(app, ["ingest", "--source", "files", "--path", str(path), "--symbol", symbol,
                                       "--timeframe", "1h", "--json"])
        assert ingested.exit_code == 0, ingested.stderr
    path = _write(tmp_path, TOML.format(gross=1.0, drawdown=0.5))
    outcome = runner.invoke(app, ["backtest", "--portfolio", str(path), "--start", "2021-02-01", "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    document = json.loads(outcome.stdout)
    assert [s["sleeve"] for s in document["sleeves"]] == ["btc-trend:BTC/USDT", "eth-rsi:ETH/USDT"]
    assert document["trades"] == sum(s["trades"] for s in document["sleeves"])
    assert document["first"] == "2021-02-01T00:00:00+00:00"
    stored = Path(document["stored"])
    assert {p.name for p in stored.iterdir()} >= {"summary.json", "equity.parquet", "fills.parquet"}
    stored_equity = pd.read_parquet(stored / "equity.parquet")
    assert stored_equity["equity"].iloc[-1] == pytest.approx(document["final_equity"])
    assert len(stored_equity) == document["bars"]
