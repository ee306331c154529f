"""``tradeforge strategies check``: it passes every shipped strategy, flags planted look-ahead, warm-up
dependence and an inexact stream, and the runtime refuses a strategy of a trader's own that fails it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.state import StateStore
from pipeline.strategies import REGISTRY
from pipeline.strategies.checks import check_strategy, sample_bars
from tests.conftest import shared_file
from tradeforge_cli.app import app

PLANTED = '''
import numpy as np
from pipeline.strategies import Targets


class _Batch:
    """A stream that recomputes the whole frame it has seen (slow, but exact when the rule is)."""

    def __init__(self, strategy):
        self.strategy, self.closes = strategy, np.empty(0)

    def update(self, features):
        n = len(features)
        self.closes = np.concatenate((self.closes, features["close"].to_numpy(dtype=np.float64)))
        full = self.strategy.rule(self.closes)
        return Targets.from_signals(full[0][-n:] if n else full[0][:0], full[1][-n:] if n else full[1][:0],
                                    ("in", "out"))

    def state(self):
        return {"closes": self.closes.tolist()}

    def restore(self, state):
        self.closes = np.array(state["closes"])


class Base:
    requires = ()
    warmup = 20

    def stream(self):
        return _Batch(self)

    def targets(self, features):
        return self.stream().update(features)


class PeekAhead(Base):
    """Buys when the next close is higher: it reads the future."""
    name = "peek_ahead"

    def rule(self, close):
        nxt = np.r_[close[1:], np.nan]
        return nxt > close, nxt < close


class AllTimeHigh(Base):
    """Long at a new high of every close it has seen: it depends on where the history starts."""
    name = "all_time_high"

    def rule(self, close):
        high = np.maximum.accumulate(close)
        return close >= high, close < 0.9 * high


class Breakout(Base):
    """An exact 20-bar breakout."""
    name = "breakout"

    def rule(self, close):
        mean = np.convolve(close, np.ones(20) / 20, mode="full")[: len(close)]
        mean[:19] = np.nan
        return close > mean, close < mean


class PeekingLimit(Breakout):
    """The breakout entered with a limit order at the *next* close: its order reads the future."""
    name = "peeking_limit"

    def stream(self):
        stream = _Batch(self)
        plain = stream.update

        def update(features):
            targets = plain(features)
            closes = stream.closes
            nxt = np.r_[closes[1:], closes[-1:]][-len(features):] if len(features) else closes[:0]
            return targets.with_orders(kind="limit", price=nxt)
        stream.update = update
        return stream


class Forgetful(Breakout):
    """The breakout whose saved state forgets the closes."""
    name = "forgetful"

    def stream(self):
        stream = _Batch(self)
        stream.state = lambda: {"closes": []}
        return stream
'''


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return sample_bars()


@pytest.mark.parametrize(("name", "params"), [
    *[(name, {}) for name in sorted(REGISTRY.built_in)],
    ("hybrid", {"base": "sma_cross", "fast": "5", "slow": "20"}),
    ("hybrid", {"base": "rsi_reversion", "threshold": "0.3"}),
])
def test_every_shipped_strategy_passes(name: str, params: dict[str, str], bars: pd.DataFrame) -> None:
    report = check_strategy(REGISTRY.build(name, params), bars)
    assert report.passed, report.text()
    assert {(f.check, f.column) for f in report.findings} == {
        (check, column) for check in ("look-ahead", "warm-up", "stream") for column in ("exposure", "reason", "order")}
    assert all(f.compared >= 200 for f in report.findings)


def test_the_example_passes_on_real_bars() -> None:
    real = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-4000:].reset_index(drop=True)
    from tests.pipeline.strategies.test_user_strategies import EXAMPLE

    report = check_strategy(REGISTRY.build(f"{EXAMPLE}:BandBreakout"), real)
    assert report.passed and report.decisions > 100, report.text()


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    path = tmp_path / "planted.py"
    path.write_text(PLANTED)
    return path


@pytest.mark.parametrize(("cls", "failing"), [
    ("PeekAhead", {"look-ahead", "stream"}), ("AllTimeHigh", {"warm-up"}), ("Forgetful", {"stream"}),
    ("PeekingLimit", {"look-ahead", "stream"})])
def test_planted_faults_are_flagged_by_the_check_that_sees_them(
        planted: Path, bars: pd.DataFrame, cls: str, failing: set[str]) -> None:
    report = check_strategy(REGISTRY.build(f"{planted}:{cls}"), bars)
    assert not report.passed
    assert {f.check for f in report.findings if not f.passed} == failing, report.text()
    first = next(f for f in report.findings if not f.passed)
    assert first.differing > 0 and first.first is not None and "FAILED" in report.text()
    if cls == "PeekingLimit":  # its decisions are causal: only how it executes them reads the future
        assert {f.column for f in report.findings if not f.passed} == {"order"}, report.text()


def test_the_command_prints_a_verdict_per_check_and_column_and_exits_1_on_failure(planted: Path) -> None:
    runner = CliRunner()
    failed = runner.invoke(app, ["strategies", "check", f"{planted}:PeekAhead"])
    assert failed.exit_code == 1
    assert "peek_ahead: FAILED" in failed.stdout and "look-ahead exposure FAILED" in failed.stdout
    passed = runner.invoke(app, ["strategies", "check", "sma_cross", "--param", "fast=5", "--json"])
    assert passed.exit_code == 0, passed.stderr
    document = json.loads(passed.stdout)
    assert document["passed"] is True and document["bars"] == 3000 and len(document["findings"]) == 9


def test_the_runtime_refuses_a_failing_strategy_of_your_own_unless_allowed(
        planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    data = tmp_path / "bars.parquet"
    pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-500:].to_parquet(data)
    args = ["runtime", "--mode", "paper", "--feed", "replay", "--data", str(data), "--speed", "max", "--symbol",
            "BTC/USDT", "--timeframe", "1h", "--strategy", f"{planted}:AllTimeHigh", "--fresh", "--json"]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "failed its check" in refused.stderr and "warm-up    exposure FAILED" in refused.stderr
    assert "--allow-unchecked" in refused.stderr
    allowed = runner.invoke(app, [*args, "--allow-unchecked"])
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["bars"] == 500
    store = StateStore.read_only(f"sqlite:///{tmp_path / 'data' / 'state' / 'tradeforge.db'}")
    (event,) = store.events("unchecked")
    assert event.sleeve == "main:BTC/USDT" and "all_time_high: FAILED" in event.detail
