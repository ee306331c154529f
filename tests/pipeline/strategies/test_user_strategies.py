"""A trader's own strategy, written outside the repository: found each way tradeforge finds one, validated once,
and trading the same in a backtest and a paper replay."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.backtest.portfolio_config import load_portfolio, sleeves_of
from pipeline.domain import DataError
from pipeline.strategies import REGISTRY
from tests.conftest import REPO, shared_file
from tradeforge_cli.app import app

EXAMPLE = REPO / "examples" / "strategies" / "band_breakout.py"
PACKAGE = "tf_user_breakouts"


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "btc_1h.parquet"
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-3000:].reset_index(drop=True)
    hours.to_parquet(path)
    return path


@pytest.fixture
def own_folder(tmp_path: Path) -> Path:
    """The trader's folder, outside the repository, holding a copy of the example strategy."""
    folder = tmp_path / "my_strategies"
    folder.mkdir()
    (folder / "breakout.py").write_text(EXAMPLE.read_text())
    return folder


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package installed on the path that declares the strategy in the ``tradeforge.strategies`` group."""
    site = tmp_path / "site"
    (site / PACKAGE).mkdir(parents=True)
    (site / PACKAGE / "__init__.py").write_text("")
    (site / PACKAGE / "strategies.py").write_text(EXAMPLE.read_text())
    dist = site / f"{PACKAGE}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[tradeforge.strategies]\nband_breakout = {PACKAGE}.strategies:BandBreakout\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def _invoke(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _backtest_and_replay(strategy: str, bars: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(data_dir))
    common = ["--strategy", strategy, "--data", str(bars), "--param", "window=24", "--param", "band=0.005",
              "--fee-bps", "10", "--max-position", "1.0", "--no-breakers", "--json"]
    backtest = _invoke(["backtest", *common])
    replay = _invoke(["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--symbol", "BTC/USDT",
                      "--timeframe", "1h", "--fresh", *common])
    return backtest, replay


def _outcome(run: dict[str, Any]) -> tuple[Any, ...]:
    return run["fills"], run["trades"], run["final_equity"]


def test_a_strategy_outside_the_repository_trades_the_same_each_way_it_is_found(
        own_folder: Path, installed: Path, bars_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ways = {"path": f"{own_folder / 'breakout.py'}:BandBreakout", "module": f"{PACKAGE}.strategies:BandBreakout",
            "entry point": "band_breakout"}
    outcomes = {}
    for way, strategy in ways.items():
        backtest, replay = _backtest_and_replay(strategy, bars_file, tmp_path / way.replace(" ", "_"), monkeypatch)
        assert replay["bars"] == 3000
        assert _outcome(backtest) == _outcome(replay), way  # the paper replay fills exactly as the backtest
        outcomes[way] = _outcome(backtest)
    monkeypatch.setenv("TRADEFORGE_STRATEGY_PATHS", str(own_folder))  # one name, two places: refused, not guessed
    listing = _invoke(["strategies", "list", "--json"])
    assert any("band_breakout" in problem and "also defined" in problem for problem in listing["problems"])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(installed)])
    backtest, replay = _backtest_and_replay("band_breakout", bars_file, tmp_path / "folder", monkeypatch)
    assert _outcome(backtest) == _outcome(replay)
    outcomes["folder"] = _outcome(backtest)
    assert len(set(outcomes.values())) == 1, outcomes
    assert outcomes["path"][0] > 20, outcomes  # it traded


def test_relative_paths_name_files_from_where_they_are_written(own_folder: Path, tmp_path: Path) -> None:
    portfolio = own_folder / "portfolio.toml"
    portfolio.write_text("""
[[strategies]]
id = "mine"
strategy = "breakout.py:BandBreakout"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5
params = { window = 12, band = 0.02 }
""")
    config = load_portfolio(portfolio)
    assert config.strategies[0].strategy == f"{own_folder / 'breakout.py'}:BandBreakout"
    (sleeve,) = sleeves_of(config)
    assert repr(sleeve.strategy) == "BandBreakout(window=12, band=0.02)"


def test_parameters_are_validated_against_the_strategys_own_model(own_folder: Path) -> None:
    reference = f"{own_folder / 'breakout.py'}:BandBreakout"
    with pytest.raises(DataError, match=r"parameter 'window' \(int, >= 2, <= 10000\): .*greater than or equal to 2"):
        REGISTRY.build(reference, {"window": "1"})
    with pytest.raises(DataError, match=r"has no parameter 'windw'; its parameters are window, band"):
        REGISTRY.build(reference, {"windw": "20"})
    built = REGISTRY.build(reference, {"window": "30", "band": 0.02})
    assert repr(built) == "BandBreakout(window=30, band=0.02)"
    shown = _invoke(["strategies", "show", reference, "--json"])
    assert shown["source"] == "path" and shown["origin"] == str(own_folder / "breakout.py")
    assert [(p["name"], p["default"], p["bounds"]) for p in shown["parameters"]] == [
        ("window", 48, ">= 2, <= 10000"), ("band", 0.01, ">= 0.0, < 0.5")]


def test_a_broken_file_is_named_with_its_line_and_the_others_still_load(
        own_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (own_folder / "half_written.py").write_text("import numpy\n\nclass Half:\n    name = 'half'\n"
                                                "    def stream(self)\n")
    (own_folder / "raises.py").write_text("X = 1\nraise RuntimeError('no market data key')\n")
    (own_folder / "shadow.py").write_text(EXAMPLE.read_text().replace('name = "band_breakout"', 'name = "sma_cross"'))
    monkeypatch.setenv("TRADEFORGE_STRATEGY_PATHS", str(own_folder))
    assert REGISTRY.build("band_breakout").name == "band_breakout"  # the good file loads whatever the others do
    _, problems = REGISTRY.user()
    described = sorted(str(problem) for problem in problems)
    assert any(f"{own_folder / 'half_written.py'}, line 5: SyntaxError" in text for text in described), described
    assert any(f"{own_folder / 'raises.py'}, line 2: RuntimeError: no market data key" in text
               for text in described), described
    assert any("'sma_cross' has the name of a shipped strategy" in text for text in described), described
    with pytest.raises(DataError, match=r"(?s)'half' is not known.*could not load .*half_written.py, line 5"):
        REGISTRY.build("half")
    with pytest.raises(DataError, match=r"half_written.py, line 5: SyntaxError"):
        REGISTRY.build(f"{own_folder / 'half_written.py'}:Half")
    portfolio = tmp_path / "two.toml"
    portfolio.write_text("""
[[strategies]]
id = "ok"
strategy = "band_breakout"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5

[[strategies]]
id = "shipped"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5
""")
    assert [s.strategy.name for s in sleeves_of(load_portfolio(portfolio))] == ["band_breakout", "sma_cross"]
    listing = CliRunner().invoke(app, ["strategies", "list"])
    assert listing.exit_code == 0 and "could not load" in listing.stderr and "half_written.py" in listing.stderr


def test_a_portfolio_entry_that_fails_names_the_file_and_the_entry(tmp_path: Path) -> None:
    portfolio = tmp_path / "bad.toml"
    portfolio.write_text("""
[[strategies]]
id = "trend"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5
params = { fast = 40, slow = 20 }
""")
    with pytest.raises(DataError, match=r"portfolio file '.*bad.toml', strategy 'trend': strategy 'sma_cross'.*'slow'"):
        load_portfolio(portfolio)
