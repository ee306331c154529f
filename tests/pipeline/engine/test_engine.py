"""The engine core: the standard workload reproduced exactly, step/driver parity, risk checks and breakers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.engine import Engine, EngineConfig, EngineResult, cache, run
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file

STANDARD = EngineConfig(fee_bps=10, cash=100_000, max_position=1.0).without_breakers()


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"))


def standard_workload_oracle(bars: pd.DataFrame) -> tuple[list[tuple[int, str, float, float]], float]:
    """The standard workload exactly as specified, written as a plain loop: (fills, final equity)."""
    close = bars["close"]
    d = (close.rolling(10).mean() - close.rolling(30).mean()).to_numpy()
    opens, closes = bars["open"].to_numpy(), close.to_numpy()
    fee = 0.001
    cash, units, long = 100_000.0, 0.0, False
    fills: list[tuple[int, str, float, float]] = []
    for i in range(1, len(bars) - 1):  # a signal on the last bar is not filled
        if not long and d[i - 1] < 0 < d[i]:
            price = opens[i + 1]
            units = cash / (price * (1 + fee))
            cash, long = 0.0, True
            fills.append((i + 1, "buy", units, price))
        elif long and d[i - 1] > 0 > d[i]:
            price = opens[i + 1]
            cash = units * price * (1 - fee)
            fills.append((i + 1, "sell", units, price))
            units, long = 0.0, False
    return fills, cash + units * closes[-1]


def _standard(bars: pd.DataFrame) -> EngineResult:
    strategy = REGISTRY.build("sma_cross", {"fast": "10", "slow": "30"})
    targets = strategy.targets(bars)
    return run(bars, targets.exposure, targets.reason, targets.reasons, STANDARD)


def test_standard_workload_is_reproduced_exactly_on_real_data(minutes: pd.DataFrame) -> None:
    bars = minutes.iloc[:200_000].reset_index(drop=True)
    expected_fills, expected_equity = standard_workload_oracle(bars)
    result = _standard(bars)
    got = list(zip(result.fills["bar"], result.fills["side"], result.fills["qty"], result.fills["price"], strict=True))
    assert len(got) == len(expected_fills) > 1000
    assert got == expected_fills  # same bars, sides, quantities and prices, bit for bit
    assert result.equity["equity"].iloc[-1] == expected_equity
    assert len(result.trades) == len(expected_fills) // 2  # an open position at the end is not a trade
    first_decision_bar = int(result.fills["bar"].iloc[0]) - 1
    assert first_decision_bar >= 30


def test_trades_pair_their_fills_and_pnl_adds_up(minutes: pd.DataFrame) -> None:
    result = _standard(minutes.iloc[:50_000].reset_index(drop=True))
    trades, fills = result.trades, result.fills
    buys, sells = fills[fills["side"] == "buy"], fills[fills["side"] == "sell"]
    np.testing.assert_allclose(trades["entry_price"], buys["price"].to_numpy()[: len(trades)], rtol=1e-12)
    np.testing.assert_allclose(trades["exit_price"], sells["price"].to_numpy(), rtol=1e-12)
    realised = trades["pnl"].sum()
    flat_equity = result.cash + result.open_units * 0.0
    if result.open_units == 0.0:
        assert flat_equity - STANDARD.cash == pytest.approx(realised, rel=1e-9)
    assert (trades["fees"] > 0).all()
    assert set(trades["entry_reason"]) == {"sma_cross up (10/30)"}
    assert set(trades["exit_reason"]) == {"sma_cross down (10/30)"}


def _step_through(bars: pd.DataFrame, aims: np.ndarray, codes: np.ndarray, reasons: tuple[str, ...],
                  config: EngineConfig) -> EngineResult:
    engine = Engine(config, reasons)
    for row, aim, code in zip(bars.itertuples(index=False), aims, codes, strict=True):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aim, code)
    return engine.result()


def _assert_same(left: EngineResult, right: EngineResult) -> None:
    for name in ("fills", "trades", "equity", "rejections", "breaker_events"):
        pd.testing.assert_frame_equal(getattr(left, name), getattr(right, name), check_exact=True)


@pytest.mark.parametrize(
    "config",
    [
        STANDARD,
        EngineConfig(fee_bps=10, max_position=0.5, stop_loss=0.004, take_profit=0.006, slippage_bps=2,
                     slippage_vol=0.1, lot_size=0.001, tick_size=0.01, min_notional=10,
                     max_consecutive_losses=None),
        EngineConfig(fee_bps=10, max_position=1.0, max_drawdown=0.04, daily_loss=0.03, max_consecutive_losses=12,
                     max_trades_per_day=60, flatten_on_trip=True),
        EngineConfig(fee_bps=5, max_position=1.0, fill="close", allow_short=True),
    ],
    ids=["standard", "costs-stops-rounding", "breakers-flatten", "close-fills"],
)
def test_stepping_bar_by_bar_equals_the_fast_driver(minutes: pd.DataFrame, config: EngineConfig) -> None:
    bars = minutes.iloc[300_000:306_000].reset_index(drop=True)
    strategy = REGISTRY.build("sma_cross", {"fast": "10", "slow": "30"})
    targets = strategy.targets(bars)
    aims = targets.exposure.copy()
    if config.allow_short:
        aims[aims == 0.0] = -1.0  # trade both sides
    fast = run(bars, aims, targets.reason, targets.reasons, config)
    stepped = _step_through(bars, aims, targets.reason, targets.reasons, config)
    assert len(fast.fills) > 10
    if config.max_drawdown is not None:
        assert len(fast.breaker_events) > 0  # the breakers are exercised, not just switched on
    _assert_same(fast, stepped)


def _bars(closes: list[float], start: str = "2024-01-01", freq: str = "1h") -> pd.DataFrame:
    c = np.asarray(closes, dtype=float)
    o = np.r_[c[0], c[:-1]]
    return pd.DataFrame(
        {
            "timestamp": pd.Series(pd.date_range(start, periods=len(c), freq=freq, tz="UTC").as_unit("ms")),
            "open": o,
            "high": np.maximum(o, c),
            "low": np.minimum(o, c),
            "close": c,
            "volume": 1.0,
        }
    )


def _decide(n: int, decisions: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    aims = np.full(n, np.nan)
    codes = np.full(n, -1)
    for bar, aim in decisions.items():
        aims[bar] = aim
        codes[bar] = 0
    return aims, codes


def test_drawdown_breaker_trips_latches_and_blocks_new_entries() -> None:
    bars = _bars([100, 100, 100, 90, 75, 70, 80, 90, 100, 110, 120])
    aims, codes = _decide(len(bars), {1: 1.0, 5: 0.0, 7: 1.0})
    config = EngineConfig(fee_bps=0, max_position=1.0, max_drawdown=0.2, daily_loss=None)
    result = run(bars, aims, codes, ("rule",), config)
    assert result.breaker_events["rule"].tolist() == ["max_drawdown"]
    assert result.breaker_events["value"].iloc[0] == pytest.approx(0.25)
    assert result.breaker_events["timestamp"].iloc[0] == bars["timestamp"].iloc[4]
    assert result.fills["side"].tolist() == ["buy", "sell"]  # the exit passes, the re-entry is blocked
    assert result.rejections["what"].tolist() == ["blocked: circuit breaker tripped"]


def test_flatten_on_trip_closes_the_position_at_the_next_open() -> None:
    bars = _bars([100, 100, 100, 97, 94, 93, 95])
    aims, codes = _decide(len(bars), {1: 1.0})
    config = EngineConfig(fee_bps=0, max_position=1.0, daily_loss=0.05, max_drawdown=None, flatten_on_trip=True)
    result = run(bars, aims, codes, ("rule",), config)
    assert result.breaker_events["rule"].tolist() == ["daily_loss"]
    tripped_bar = int(np.flatnonzero(bars["timestamp"] == result.breaker_events["timestamp"].iloc[0])[0])
    assert result.fills["bar"].tolist() == [2, tripped_bar + 1]
    assert result.fills["reason"].iloc[-1] == "breaker_flatten"


def test_consecutive_losses_and_trades_per_day_breakers() -> None:
    closes = [100.0] * 22  # flat prices: every round trip loses its fees
    bars = _bars(closes, freq="1min")
    decisions = {i: (1.0 if i % 2 == 1 else 0.0) for i in range(1, len(closes) - 1)}
    aims, codes = _decide(len(bars), decisions)
    config = EngineConfig(fee_bps=10, max_position=1.0, max_consecutive_losses=3, max_trades_per_day=None,
                          max_drawdown=None, daily_loss=None)
    result = run(bars, aims, codes, ("flip",), config)
    assert result.breaker_events["rule"].tolist() == ["consecutive_losses"]
    assert len(result.trades) == 3
    per_day = EngineConfig(fee_bps=0, max_position=1.0, max_trades_per_day=4, max_consecutive_losses=None,
                           max_drawdown=None, daily_loss=None)
    limited = run(bars, aims, codes, ("flip",), per_day)
    assert limited.breaker_events["rule"].tolist() == ["trades_per_day"]
    assert len(limited.fills) == 4


def test_max_position_and_short_rules_resize_and_record() -> None:
    bars = _bars([100] * 6)
    aims, codes = _decide(len(bars), {1: 1.0, 3: -1.0})
    result = run(bars, aims, codes, ("r",), EngineConfig(fee_bps=0, max_position=0.25))
    assert result.fills["qty"].iloc[0] == pytest.approx(250.0)
    assert result.rejections["what"].tolist() == ["resized: max position", "resized: short selling not allowed"]
    assert result.open_units == 0.0


def test_min_notional_lot_and_tick_rounding_and_slippage() -> None:
    bars = _bars([100.003] * 6)
    aims, codes = _decide(len(bars), {1: 0.5, 3: 0.5000001})
    config = EngineConfig(fee_bps=0, max_position=1.0, lot_size=0.1, tick_size=0.01, slippage_bps=10,
                          min_notional=5.0, cash=1000)
    result = run(bars, aims, codes, ("r",), config)
    fill = result.fills.iloc[0]
    assert fill["price"] == pytest.approx(100.11)  # 100.003 * 1.001 = 100.103 rounded up to the tick
    assert fill["qty"] == pytest.approx(4.9)  # 500 / 100.103 = 4.99 → 4.9 lots of 0.1
    assert len(result.fills) == 1


def test_stop_loss_and_take_profit() -> None:
    bars = _bars([100, 100, 100, 98, 94, 100, 100, 104, 112])
    aims, codes = _decide(len(bars), {1: 1.0, 5: 1.0})
    config = EngineConfig(fee_bps=0, max_position=1.0, stop_loss=0.05, take_profit=0.1)
    result = run(bars, aims, codes, ("r",), config)
    assert result.trades["exit_reason"].tolist() == ["stop_loss"]
    assert result.trades["exit_price"].iloc[0] == pytest.approx(95.0)
    aims2, codes2 = _decide(len(bars), {5: 1.0})
    later = run(bars, aims2, codes2, ("r",), config)
    assert later.trades["exit_reason"].tolist() == ["take_profit"]
    assert later.trades["exit_price"].iloc[0] == pytest.approx(110.0)


def test_orders_for_a_closed_market_wait_or_are_rejected() -> None:
    bars = _bars([10, 10, 10, 10], freq="1h")
    aims, codes = _decide(len(bars), {0: 1.0})
    sessions = np.array([True, False, False, True])
    waited = run(bars, aims, codes, ("r",), EngineConfig(fee_bps=0), sessions)
    assert waited.fills["bar"].tolist() == [3]
    rejected = run(bars, aims, codes, ("r",), EngineConfig(fee_bps=0, session_orders="reject"), sessions)
    assert rejected.fills.empty
    assert rejected.rejections["what"].tolist() == ["rejected: market closed"]


def test_a_reset_clears_the_latch_and_entries_resume() -> None:
    bars = _bars([100, 100, 100, 90, 75, 70, 80, 90, 100, 110, 120])
    engine = Engine(EngineConfig(fee_bps=0, max_position=1.0, max_drawdown=0.2, daily_loss=None), ("rule",))
    decisions = {1: 1.0, 5: 0.0, 7: 1.0, 8: 0.0, 9: 1.0}
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 9:
            assert engine.ledger.tripped == ["max_drawdown"]
            engine.ledger.reset_breakers()
            assert engine.ledger.tripped == []
        aim = decisions.get(i, np.nan)
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aim, 0 if aim == aim else -1)
    result = engine.result()
    assert result.fills["bar"].tolist() == [2, 6, 10]  # entry, exit, and the entry after the reset
    assert result.rejections["what"].tolist() == ["blocked: circuit breaker tripped"]  # bar 7's, at bar 8


def test_external_fills_from_a_venue_reproduce_the_simulated_close_fills(minutes: pd.DataFrame) -> None:
    """A venue that fills every intent at its reference price, and the resting protective stop when a bar
    reaches it, books the same ledger as the simulation."""
    bars = minutes.iloc[300_000:303_000].reset_index(drop=True)
    targets = REGISTRY.build("sma_cross").targets(bars)
    config = EngineConfig(fee_bps=10, max_position=0.8, fill="close", stop_loss=0.004, max_consecutive_losses=None)
    simulated = run(bars, targets.exposure, targets.reason, targets.reasons, config)
    venue = Engine(config, targets.reasons, external=True)

    def book(qty: float, price: float, reason: str) -> None:
        venue.apply_fill(qty, price, abs(qty) * price * config.fee_bps / 10_000, reason)

    for row, aim, code in zip(bars.itertuples(index=False), targets.exposure, targets.reason, strict=True):
        resting = venue.protective_stop()  # placed at the venue after the previous bar
        venue.step(row.timestamp, row.open, row.high, row.low, row.close, aim, code)
        if resting is not None and row.low <= resting.price:
            book(resting.qty, min(row.open, resting.price), resting.reason)
        for intent in venue.take_intents():
            held = venue.ledger.units  # an exit never sells more than is held (the stop may have sold it)
            qty = max(intent.qty, -held) if intent.qty < 0 else intent.qty
            if qty != 0.0:
                book(qty, intent.reference_price, intent.reason)
            if qty != intent.qty:
                venue.release(intent.qty - qty)
    booked = venue.result()
    assert len(booked.fills) == len(simulated.fills) > 20
    np.testing.assert_allclose(booked.fills["qty"], simulated.fills["qty"], rtol=1e-9)
    np.testing.assert_allclose(booked.fills["price"], simulated.fills["price"], rtol=1e-12)
    assert booked.fills["reason"].tolist() == simulated.fills["reason"].tolist()
    np.testing.assert_allclose(booked.trades["pnl"], simulated.trades["pnl"], rtol=1e-6)
    assert booked.equity["equity"].iloc[-1] == pytest.approx(simulated.equity["equity"].iloc[-1], rel=1e-9)


def test_units_in_flight_are_not_ordered_twice_and_a_release_frees_them() -> None:
    bars = _bars([100, 100, 100, 100, 110, 110, 110])
    aims, codes = _decide(len(bars), {1: 1.0})
    engine = Engine(EngineConfig(fee_bps=0, max_position=1.0, stop_loss=0.05, take_profit=0.05), ("r",),
                    external=True)
    ordered: list[float] = []
    for i, row in enumerate(bars.itertuples(index=False)):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i == 3:  # the venue's resting stop covers what is held, not what is still in flight
            stop = engine.protective_stop()
            assert stop is not None and stop.reason == "stop_loss"
            assert (stop.qty, stop.price) == pytest.approx((-400.0, 95.0))
        for intent in engine.take_intents():
            ordered.append(intent.qty)
            if intent.qty > 0:
                engine.apply_fill(intent.qty * 0.4, intent.reference_price, 0.0, intent.reason)  # partial
            else:
                engine.apply_fill(intent.qty, intent.reference_price, 0.0, intent.reason)
    assert ordered[0] == pytest.approx(1000.0)
    assert ordered[1] == pytest.approx(-1000.0)  # the target exits all, the unfilled 600 included, once
    assert len(ordered) == 2
    engine.release(600.0)  # the venue cancelled the unfilled rest of the buy
    assert engine.ledger.inflight == 0.0


def test_the_ledgers_named_state_follows_its_fills() -> None:
    bars = _bars([100.0, 100.0, 110.0, 120.0, 120.0, 90.0, 90.0])
    engine = Engine(EngineConfig(fee_bps=0, cash=1000.0, max_position=1.0).without_breakers(), ("in",))
    aims, codes = _decide(len(bars), {0: 0.5, 2: 1.0, 4: 0.0})
    seen = []
    for i, row in enumerate(bars.itertuples(index=False)):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        ledger = engine.ledger
        seen.append((ledger.units, ledger.cash, ledger.equity, ledger.average_price, ledger.entry_bar))
    fills = engine.result().fills
    assert list(fills["side"]) == ["buy", "buy", "sell"]
    bought = fills.iloc[:2]
    units = float(bought["qty"].sum())
    # bar 3 holds what both buys bought, at their volume-weighted price
    assert seen[3][0] == pytest.approx(units) and seen[3][0] > 0
    assert seen[3][3] == pytest.approx(float((bought["qty"] * bought["price"]).sum()) / units)
    assert seen[3][4] == 1  # entered at bar 1's open
    assert seen[3][2] == pytest.approx(seen[3][1] + units * 120.0)
    assert engine.ledger.position_value == pytest.approx(engine.ledger.equity - engine.ledger.cash)
    # flat again from bar 5: no position, no average price, equity is cash
    assert seen[5][0] == 0.0 and seen[5][3] == 0.0 and seen[5][2] == seen[5][1]
    assert engine.ledger.inflight == 0.0 and engine.ledger.consecutive_losses == 0
    assert engine.ledger.tripped_mask == 0
    engine.ledger.pause()
    assert engine.ledger.tripped_mask != 0 and engine.ledger.tripped == ["paused"]
    engine.ledger.portfolio_paused = True
    assert engine.ledger.portfolio_paused
    engine.ledger.portfolio_paused = False
    assert not engine.ledger.portfolio_paused and engine.ledger.tripped == ["paused"]


def test_the_compiled_cache_is_dropped_when_any_engine_source_changes(tmp_path: Path) -> None:
    for name in cache.COMPILED_SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    cached = tmp_path / "__pycache__"
    cached.mkdir()
    step = cached / "kernel.step-100.py311.nbi"
    step.write_bytes(b"index")
    assert cache.refresh(tmp_path)  # no fingerprint yet: what is cached may be stale
    assert not step.exists()
    step.write_bytes(b"index")
    assert not cache.refresh(tmp_path)  # nothing changed: the cache is kept
    assert step.exists()
    (tmp_path / "layout.py").write_text("F_UNITS = 2\n")  # a constant compiled into kernel.py's functions
    assert cache.refresh(tmp_path)
    assert not step.exists() and not list(cached.glob("*.nb[ic]"))
