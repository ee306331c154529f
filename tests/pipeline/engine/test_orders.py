"""Order types against fills computed by hand on real BTC/USDT 1m bars: limit and stop orders, their time in
force, and a position's stop-loss, take-profit and trailing stop with the intrabar conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import DataError
from pipeline.domain.orders import order_table
from pipeline.engine import Engine, EngineConfig, EngineResult, run
from pipeline.strategies import Targets
from tests.conftest import shared_file

CASH = 100_000.0
FEE = 0.001
CONFIG = EngineConfig(cash=CASH, fee_bps=10, max_position=1.0).without_breakers()


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    minutes = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"))
    return minutes.iloc[400_000:402_000].reset_index(drop=True)


def _one_decision(n: int, bar: int, aim: float = 1.0) -> Targets:
    exposure = np.full(n, np.nan)
    reason = np.full(n, -1, dtype=np.int64)
    exposure[bar], reason[bar] = aim, 0
    return Targets(exposure, reason, ("entry",))


def _run(bars: pd.DataFrame, targets: Targets, config: EngineConfig = CONFIG) -> EngineResult:
    return run(bars, targets.exposure, targets.reason, targets.reasons, config, orders=targets.orders)


def _column(bars: pd.DataFrame, name: str) -> np.ndarray:
    return bars[name].to_numpy(dtype=np.float64)


def test_a_buy_limit_fills_at_its_price_on_the_first_bar_that_trades_through_it(bars: pd.DataFrame) -> None:
    o, low = _column(bars, "open"), _column(bars, "low")
    decided = 10
    limit = float(bars["close"].iloc[decided]) * 0.995
    later = np.arange(len(bars)) > decided
    through = np.flatnonzero(later & (low < limit))[0]  # a touch (low == limit) is not a fill
    expected_price = o[through] if o[through] <= limit else limit
    result = _run(bars, _one_decision(len(bars), decided).with_orders(kind="limit", price=limit))
    fill = result.fills.iloc[0]
    assert int(fill["bar"]) == through > decided + 1
    assert fill["price"] == expected_price  # no slippage on a limit fill
    assert fill["qty"] == pytest.approx(CASH / (expected_price * (1 + FEE)), rel=1e-12)


def test_a_buy_limit_above_the_next_open_fills_at_that_open(bars: pd.DataFrame) -> None:
    o, c = _column(bars, "open"), _column(bars, "close")
    gap = np.flatnonzero(o[1:] < c[:-1])[5] + 1  # a bar that opens below the previous close
    limit = (o[gap] + c[gap - 1]) / 2  # placed at the previous close, between that close and this open
    result = _run(bars, _one_decision(len(bars), gap - 1).with_orders(kind="limit", price=limit))
    assert (int(result.fills["bar"].iloc[0]), result.fills["price"].iloc[0]) == (gap, o[gap])


def test_a_sell_limit_exits_when_a_bar_trades_above_it(bars: pd.DataFrame) -> None:
    o, high = _column(bars, "open"), _column(bars, "high")
    exposure = np.full(len(bars), np.nan)
    reason = np.full(len(bars), -1, dtype=np.int64)
    exposure[[5, 20]], reason[[5, 20]] = (1.0, 0.0), (0, 1)
    target = float(bars["close"].iloc[20]) * 1.002
    price = np.where(np.arange(len(bars)) == 20, target, np.nan)
    kinds = np.where(np.arange(len(bars)) == 20, 1.0, 0.0)  # market entry, limit exit
    targets = Targets(exposure, reason, ("in", "out")).with_orders(kind=kinds, price=price)
    through = np.flatnonzero((np.arange(len(bars)) > 20) & (high > target))[0]
    result = _run(bars, targets)
    sell = result.fills.iloc[1]
    assert (int(sell["bar"]), sell["side"]) == (through, "sell")
    assert sell["price"] == (o[through] if o[through] >= target else target)
    assert result.trades["exit_reason"].tolist() == ["out"]


def test_a_buy_stop_fills_at_its_trigger_or_the_gapped_open_with_slippage(bars: pd.DataFrame) -> None:
    o, high = _column(bars, "open"), _column(bars, "high")
    decided = 30
    trigger = float(bars["high"].iloc[decided]) * 1.0005
    hit = np.flatnonzero((np.arange(len(bars)) > decided) & (high >= trigger))[0]
    config = CONFIG.model_copy(update={"slippage_bps": 5.0})
    result = _run(bars, _one_decision(len(bars), decided).with_orders(kind="stop", price=trigger), config)
    fill = result.fills.iloc[0]
    assert int(fill["bar"]) == hit
    assert fill["price"] == pytest.approx(max(o[hit], trigger) * 1.0005, rel=1e-12)  # a stop is a market order


def test_a_day_order_is_cancelled_at_the_next_trading_day_and_a_gtc_one_waits() -> None:
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:6000].reset_index(drop=True)
    decided = 100
    limit = float(hours["low"].min()) * 0.5  # never reached
    day = _run(hours, _one_decision(len(hours), decided).with_orders(kind="limit", price=limit, tif="day"))
    assert day.fills.empty
    assert day.rejections["what"].tolist() == ["cancelled: day order expired unfilled"]
    stamp = hours["timestamp"].iloc[decided]
    next_day = stamp.normalize() + pd.Timedelta(days=1)
    assert day.rejections["timestamp"].iloc[0] == next_day  # the first bar of the next day (bars are 1m)
    gtc = _run(hours, _one_decision(len(hours), decided).with_orders(kind="limit", price=limit, tif="gtc"))
    assert gtc.fills.empty and gtc.rejections.empty


def _entry_bar_with_range(bars: pd.DataFrame, width: float) -> int:
    o, h, low = _column(bars, "open"), _column(bars, "high"), _column(bars, "low")
    wide = np.flatnonzero((h[1:] - o[1:] > width * o[1:]) & (o[1:] - low[1:] > width * o[1:])) + 1
    return int(wide[0])


@pytest.mark.parametrize(("intrabar", "exit_reason"), [("stop_first", "stop_loss"), ("target_first", "take_profit")])
def test_a_bar_holding_both_the_stop_and_the_target_fills_the_configured_one(
        bars: pd.DataFrame, intrabar: str, exit_reason: str) -> None:
    entry = _entry_bar_with_range(bars, 0.0006)
    o, h, low = (float(bars[c].iloc[entry]) for c in ("open", "high", "low"))
    stop = (o - low) / o * 0.9
    target = (h - o) / o * 0.9
    targets = _one_decision(len(bars), entry - 1).with_orders(stop_loss=stop, take_profit=target)
    result = _run(bars, targets, CONFIG.model_copy(update={"intrabar": intrabar}))
    sell = result.fills.iloc[1]
    assert int(sell["bar"]) == entry  # a market entry fills at the open: its own bar is checked
    expected = o * (1 - stop) if exit_reason == "stop_loss" else o * (1 + target)
    assert sell["price"] == pytest.approx(expected, rel=1e-12)
    assert result.trades["exit_reason"].tolist() == [exit_reason]


def test_a_trailing_stop_follows_the_highest_high_and_exits_at_its_level(bars: pd.DataFrame) -> None:
    o, h, low = _column(bars, "open"), _column(bars, "high"), _column(bars, "low")
    decided, trail = 50, 0.002
    entry = decided + 1
    best, exit_bar, exit_price = o[entry], -1, np.nan
    for i in range(entry, len(bars)):  # the level from the bars before i; then bar i's high raises it
        level = best * (1 - trail)
        if low[i] <= level:
            exit_bar, exit_price = i, min(o[i], level)
            break
        best = max(best, h[i])
    result = _run(bars, _one_decision(len(bars), decided).with_orders(trailing_stop=trail))
    sell = result.fills.iloc[1]
    assert exit_bar > entry + 2
    assert (int(sell["bar"]), sell["price"]) == (exit_bar, pytest.approx(exit_price, rel=1e-12))
    assert result.trades["exit_reason"].tolist() == ["trailing_stop"]


def test_a_limit_entry_is_protected_from_the_bar_after_its_fill(bars: pd.DataFrame) -> None:
    low = _column(bars, "low")
    decided = 10
    limit = float(bars["close"].iloc[decided]) * 0.998
    through = np.flatnonzero((np.arange(len(bars)) > decided) & (low < limit))[0]
    stop = 0.0005
    level = limit * (1 - stop)
    hit = np.flatnonzero((np.arange(len(bars)) > through) & (low <= level))[0]
    targets = _one_decision(len(bars), decided).with_orders(kind="limit", price=limit, stop_loss=stop)
    result = _run(bars, targets)
    assert result.fills["bar"].tolist() == [through, hit]
    assert result.trades["exit_reason"].tolist() == ["stop_loss"]


def test_orders_step_bar_by_bar_exactly_as_the_batch(bars: pd.DataFrame) -> None:
    close = _column(bars, "close")
    exposure = np.full(len(bars), np.nan)
    exposure[::97], exposure[40::97] = 1.0, 0.0
    reason = np.where(np.isnan(exposure), -1, 0).astype(np.int64)
    kinds = np.where(np.arange(len(bars)) % 3 == 0, 1.0, 2.0)
    price = np.where(kinds == 1.0, close * 0.999, close * 1.001)
    targets = Targets(exposure, reason, ("r",)).with_orders(kind=kinds, price=price, stop_loss=0.003,
                                                            trailing_stop=0.002, tif="day")
    batch = _run(bars, targets)
    engine = Engine(CONFIG, targets.reasons)
    assert targets.orders is not None
    for i, row in enumerate(bars.itertuples(index=False)):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, exposure[i], int(reason[i]),
                    order=targets.orders[i])
    stepped = engine.result()
    assert len(batch.fills) > 10
    pd.testing.assert_frame_equal(stepped.fills, batch.fills)
    pd.testing.assert_frame_equal(stepped.trades, batch.trades)


def test_bad_orders_are_refused_by_name() -> None:
    with pytest.raises(DataError, match="limit order needs a positive price"):
        order_table(3, kind="limit")
    with pytest.raises(DataError, match="stop_loss is a fraction of the price and must be below 1"):
        order_table(3, stop_loss=1.5)
    with pytest.raises(DataError, match="order kind 'iceberg' is not one of market, limit, stop"):
        order_table(3, kind="iceberg")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="time in force 'fok' is not one of gtc, day"):
        order_table(3, tif="fok")  # type: ignore[arg-type]


def test_a_venue_receives_the_order_kind_price_and_expiry_and_a_new_price_replaces_it(bars: pd.DataFrame) -> None:
    engine = Engine(CONFIG, ("entry",), external=True)
    rows = list(bars.iloc[:3].itertuples(index=False))
    first = float(rows[0].close) * 0.99
    table = order_table(1, kind="limit", price=first, tif="day", stop_loss=0.01)
    engine.step(rows[0].timestamp, rows[0].open, rows[0].high, rows[0].low, rows[0].close, 1.0, 0, order=table[0])
    (sent,) = engine.take_intents()
    day_end = rows[0].timestamp.normalize() + pd.Timedelta(days=1)
    assert (sent.kind, sent.price, sent.expires_ms) == ("limit", first, int(day_end.value // 1_000_000))
    assert sent.qty == pytest.approx(CASH / (first * (1 + FEE)), rel=1e-12)  # sized at the limit price
    engine.step(rows[1].timestamp, rows[1].open, rows[1].high, rows[1].low, rows[1].close, 1.0, 0, order=table[0])
    assert engine.take_intents() == []  # the same order again: nothing new
    again = order_table(1, kind="limit", price=first * 0.999, tif="day")
    engine.step(rows[2].timestamp, rows[2].open, rows[2].high, rows[2].low, rows[2].close, 1.0, 0, order=again[0])
    (replacement,) = engine.take_intents()  # the venue's working order is replaced by its rest at the new price,
    assert (replacement.kind, replacement.price) == ("limit", first * 0.999)  # plus what the lower price buys more
    assert replacement.qty == pytest.approx(CASH / (first * 0.999 * (1 + FEE)) - sent.qty, rel=1e-9)
    engine.release(sent.qty, unreached=True)  # the venue cancelled it unfilled: the same decision is sent again
    engine.step(rows[2].timestamp, rows[2].open, rows[2].high, rows[2].low, rows[2].close, 1.0, 0, order=again[0])
    (resent,) = engine.take_intents()
    assert resent.qty > 0 and resent.price == first * 0.999


def test_a_venue_position_is_protected_by_a_resting_stop_that_trails(bars: pd.DataFrame) -> None:
    engine = Engine(CONFIG, ("entry",), external=True)
    rows = list(bars.iloc[:40].itertuples(index=False))
    table = order_table(1, stop_loss=0.01, trailing_stop=0.002)
    engine.step(rows[0].timestamp, rows[0].open, rows[0].high, rows[0].low, rows[0].close, 1.0, 0, order=table[0])
    (buy,) = engine.take_intents()
    assert engine.protective_stop() is None  # nothing held yet
    engine.apply_fill(buy.qty, float(rows[0].close), 0.0, buy.reason)
    stop = engine.protective_stop()
    assert stop is not None and stop.qty == -buy.qty
    assert (stop.price, stop.reason) == (pytest.approx(float(rows[0].close) * 0.998), "trailing_stop")
    best = float(rows[0].close)
    for row in rows[1:]:
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, np.nan, -1)
        assert engine.take_intents() == []  # the kernel sends no stop exit: the venue holds the stop
        best = max(best, float(row.high))
        moved = engine.protective_stop()
        assert moved is not None and moved.price == pytest.approx(best * 0.998, rel=1e-12)


def test_a_market_exit_decided_on_a_days_last_bar_fills_whatever_its_time_in_force() -> None:
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-500:].reset_index(drop=True)
    last_of_day = int(np.flatnonzero(hours["timestamp"].dt.hour.to_numpy() == 23)[2])
    targets = _one_decision(len(hours), 5)
    targets.exposure[last_of_day], targets.reason[last_of_day] = 0.0, 0
    result = _run(hours, targets.with_orders(tif="day"))
    assert result.fills["bar"].tolist() == [6, last_of_day + 1] and result.rejections.empty


def test_a_day_order_works_through_the_trading_day_of_its_first_bar_on_daily_bars() -> None:
    days = pd.read_parquet(shared_file("binance_BTC-USDT_1d.parquet")).iloc[-300:].reset_index(drop=True)
    low = _column(days, "low")
    decided = 20
    reached = float(low[decided + 1]) * 1.001  # traded through on the next day only if its low is below
    result = _run(days, _one_decision(len(days), decided).with_orders(kind="limit", price=reached, tif="day"))
    assert result.fills["bar"].tolist() == [decided + 1] and result.fills["price"].iloc[0] == min(
        reached, float(days["open"].iloc[decided + 1]))
    missed = float(low[decided + 1]) * 0.999
    expired = _run(days, _one_decision(len(days), decided).with_orders(kind="limit", price=missed, tif="day"))
    assert expired.fills.empty
    assert expired.rejections["timestamp"].tolist() == [days["timestamp"].iloc[decided + 2]]


def test_an_order_that_adds_to_or_reduces_a_position_keeps_its_protections(bars: pd.DataFrame) -> None:
    o, h, low = _column(bars, "open"), _column(bars, "high"), _column(bars, "low")
    exposure = np.full(len(bars), np.nan)
    reason = np.full(len(bars), -1, dtype=np.int64)
    exposure[[50, 60]], reason[[50, 60]] = (1.0, 0.5), (0, 0)  # in, then halve with a plain market order
    distance = 0.006
    trail = np.where(np.arange(len(bars)) == 50, distance, np.nan)
    targets = Targets(exposure, reason, ("r",)).with_orders(trailing_stop=trail)
    best, exit_bar = o[51], -1
    for i in range(51, len(bars)):
        if low[i] <= best * (1 - distance):
            exit_bar = i
            break
        best = max(best, h[i])
    result = _run(bars, targets)
    assert exit_bar > 61
    assert result.fills["bar"].tolist()[:3] == [51, 61, exit_bar]
    assert result.trades["exit_reason"].tolist()[0] == "trailing_stop"  # the halving kept the entry's trailing stop


def test_a_venue_order_turned_into_a_market_order_at_the_same_exposure_is_replaced(bars: pd.DataFrame) -> None:
    engine = Engine(CONFIG.model_copy(update={"lot_size": 0.001}), ("entry",), external=True)
    rows = list(bars.iloc[:2].itertuples(index=False))
    limit = order_table(1, kind="limit", price=float(rows[0].close) * 0.99)
    engine.step(rows[0].timestamp, rows[0].open, rows[0].high, rows[0].low, rows[0].close, 1.0, 0, order=limit[0])
    (working,) = engine.take_intents()
    market = order_table(1)
    engine.step(rows[1].timestamp, rows[1].open, rows[1].high, rows[1].low, rows[1].close, 1.0, 0, order=market[0])
    (replacement,) = engine.take_intents()  # the venue's limit is replaced: its rest goes out at market
    assert replacement.kind == "market" and working.qty + replacement.qty > 0
