"""How the engine's breakers release: daily ones at the next day, others by a reset or cool-down, a pause never."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.engine import Engine, EngineConfig, EngineResult, run
from pipeline.engine.layout import LEGACY_ISTATE_SLOTS
from tests.pipeline.backtest.breaker_helpers import NO_BREAKERS
from tests.pipeline.engine import test_engine

_bars = test_engine._bars  # exact synthetic bars and decisions, as the engine tests build them
_decide = test_engine._decide


def _both_drivers(bars: pd.DataFrame, decisions: dict[int, float], config: EngineConfig) -> EngineResult:
    """The fast driver's result, after checking that stepping bar by bar gives the same frames."""
    aims, codes = _decide(len(bars), decisions)
    fast = run(bars, aims, codes, ("rule",), config)
    engine = Engine(config, ("rule",))
    for row, aim, code in zip(bars.itertuples(index=False), aims, codes, strict=True):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aim, code)
    stepped = engine.result()
    for name in ("fills", "trades", "equity", "rejections", "breaker_events"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(stepped, name), check_exact=True)
    return fast


def _bar_of(bars: pd.DataFrame, stamp: pd.Timestamp) -> int:
    return int(np.flatnonzero(bars["timestamp"] == stamp)[0])


def _events(result: EngineResult) -> list[tuple[int, str, str, str, int]]:
    """(bar, rule, action, released_by, bars_tripped) of every breaker event."""
    e = result.breaker_events
    bars = ((e["timestamp"] - pd.Timestamp("2024-01-01", tz="UTC")) // pd.Timedelta(hours=1)).astype(int)
    return list(zip(bars, e["rule"], e["action"], e["released_by"], e["bars_tripped"], strict=True))


# ------------------------------------------------------------------------------------------------ daily breakers


def test_a_daily_loss_trip_releases_at_the_next_trading_day_and_entries_resume() -> None:
    bars = _bars([100.0] * 3 + [97.0, 94.0] + [94.0] * 43)  # hourly: day 1 is bars 0-23, day 2 bars 24-47
    decisions = {1: 1.0, 6: 0.0, 10: 1.0, 12: 0.0, 26: 1.0}
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "daily_loss": 0.05})
    result = _both_drivers(bars, decisions, config)
    # 6 % down at bar 4's close trips it; the first bar of day 2 releases it, after 20 bars
    assert _events(result) == [(4, "daily_loss", "trip", "", 0), (24, "daily_loss", "release", "new_day", 20)]
    trip, release = result.breaker_events.iloc[0], result.breaker_events.iloc[1]
    assert trip["value"] == pytest.approx(0.06) and trip["threshold"] == 0.05
    assert release["value"] == pytest.approx(0.06)  # the day's loss just before the release
    assert result.fills["bar"].tolist() == [2, 7, 27]  # entry, exit, and day 2's entry; day 1's re-entry blocked
    assert result.rejections["what"].tolist() == ["blocked: circuit breaker tripped"]
    assert result.rejections["timestamp"].iloc[0] == bars["timestamp"].iloc[11]
    paused = result.equity["paused"].to_numpy()
    assert paused[4:24].all() and not paused[:4].any() and not paused[24:].any()
    assert result.paused_bars == 20

    latched = _both_drivers(bars, decisions, config.model_copy(update={"daily_release": False}))
    assert _events(latched) == [(4, "daily_loss", "trip", "", 0)]
    assert latched.fills["bar"].tolist() == [2, 7]  # without daily release day 2's entry is blocked too
    assert latched.paused_bars == len(bars) - 4


def test_a_trades_per_day_trip_releases_the_next_day() -> None:
    bars = _bars([100.0] * 48)
    decisions = {i: (1.0 if i % 2 == 0 else 0.0) for i in range(47)}  # a flip every hour, day and night
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "max_trades_per_day": 4})
    result = _both_drivers(bars, decisions, config)
    fills_per_day = result.fills.groupby(result.fills["timestamp"].dt.day).size().to_dict()
    assert fills_per_day == {1: 4, 2: 4}
    assert _events(result) == [(4, "trades_per_day", "trip", "", 0),
                               (24, "trades_per_day", "release", "new_day", 20),
                               (28, "trades_per_day", "trip", "", 0)]
    assert result.breaker_events["value"].tolist() == [4.0, 4.0, 4.0]  # the day's fills at each event
    assert result.fills["bar"].iloc[4] == 25  # day 2's first entry: decided at bar 24, right after the release


def test_a_released_daily_breaker_can_trip_again_in_the_bar_that_released_it() -> None:
    bars = _bars([100.0, 100.0, 100.0, 94.0] + [94.0] * 20 + [80.0, 80.0])
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "daily_loss": 0.05})
    result = _both_drivers(bars, {1: 1.0}, config)
    # bar 3 trips (6 % down), bar 24 (day 2) releases and, 15 % down on the day's open, trips again at its close
    assert _events(result) == [(3, "daily_loss", "trip", "", 0), (24, "daily_loss", "release", "new_day", 21),
                               (24, "daily_loss", "trip", "", 0)]
    assert result.equity["paused"].iloc[24]


# ------------------------------------------------------------------------------- breakers that wait for an operator


def _drawdown_case(cooldown: int | None) -> tuple[pd.DataFrame, EngineResult]:
    # all in at 100 (bar 2), 75 at bar 4 (25 % down: trip), out at bar 6, back in when allowed, then a slide
    closes = [100.0, 100.0, 100.0, 90.0, 75.0] + [75.0] * 6 + [70.0, 65.0, 58.0] + [58.0] * 58
    bars = _bars(closes)
    decisions = {1: 1.0, 5: 0.0, 6: 1.0, 7: 0.0, 9: 1.0}
    config = EngineConfig(fee_bps=0, max_position=1.0, breaker_cooldown_bars=cooldown,
                          **{**NO_BREAKERS, "max_drawdown": 0.2})
    return bars, _both_drivers(bars, decisions, config)


def test_a_drawdown_trip_waits_for_an_operator_across_days() -> None:
    bars, result = _drawdown_case(None)
    assert len(bars) > 48  # three trading days go by
    assert _events(result) == [(4, "max_drawdown", "trip", "", 0)]
    assert result.fills["bar"].tolist() == [2, 6]  # the exit passes; every re-entry is blocked
    assert result.paused_bars == len(bars) - 4


def test_a_drawdown_cooldown_releases_after_n_bars_and_rebases_the_peak() -> None:
    _, result = _drawdown_case(5)
    events = _events(result)
    assert events[:2] == [(4, "max_drawdown", "trip", "", 0), (9, "max_drawdown", "release", "cooldown", 5)]
    assert result.breaker_events["value"].iloc[1] == pytest.approx(0.25)  # measured from the old peak
    assert result.fills["bar"].tolist()[:3] == [2, 6, 10]  # bar 9's entry fills: the release came first
    # the peak is now the 75 000 at the release: 70 and 65 (-6.7 %, -13.3 %) pass, 58 (-22.7 %) trips again.
    # From the old 100 000 peak, 70 would already have been a 30 % drawdown.
    assert events[2] == (13, "max_drawdown", "trip", "", 0)
    assert result.breaker_events["value"].iloc[2] == pytest.approx(1 - 58 / 75)
    paused = result.equity["paused"].to_numpy()
    assert paused[4:9].all() and not paused[9:13].any() and paused[13:18].all()


def _losing_flips(days: int) -> tuple[pd.DataFrame, dict[int, float]]:
    bars = _bars([100.0] * (24 * days))  # flat prices: every round trip loses its fees
    return bars, {i: (1.0 if i % 2 == 0 else 0.0) for i in range(len(bars) - 1)}


def test_a_loss_streak_trip_waits_for_an_operator_or_its_cooldown() -> None:
    bars, decisions = _losing_flips(3)
    config = EngineConfig(fee_bps=10, max_position=1.0, **{**NO_BREAKERS, "max_consecutive_losses": 3})
    latched = _both_drivers(bars, decisions, config)
    assert _events(latched) == [(6, "consecutive_losses", "trip", "", 0)]  # no release on any new day
    assert len(latched.trades) == 3

    cooled = _both_drivers(bars, decisions, config.model_copy(update={"breaker_cooldown_bars": 10}))
    events = _events(cooled)
    assert events[:3] == [(6, "consecutive_losses", "trip", "", 0),
                          (16, "consecutive_losses", "release", "cooldown", 10),
                          (22, "consecutive_losses", "trip", "", 0)]  # the count restarted: 3 more losses
    assert cooled.breaker_events["value"].tolist()[:3] == [3.0, 3.0, 3.0]
    assert cooled.trades["exit_time"].iloc[3] > bars["timestamp"].iloc[16]  # entries resumed after the release
    assert len(cooled.trades) > 3 * len(latched.trades)


def test_an_operators_reset_is_recorded_as_a_release_at_the_next_bar() -> None:
    bars, decisions = _losing_flips(1)
    config = EngineConfig(fee_bps=10, max_position=1.0, **{**NO_BREAKERS, "max_consecutive_losses": 3})
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 12:
            assert engine.ledger.tripped == ["consecutive_losses"]
            engine.ledger.reset_breakers()
            assert engine.ledger.tripped == []
            assert engine.ledger.consecutive_losses == 3  # restarts at the next bar, when recorded
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i == 12:
            assert engine.ledger.consecutive_losses == 0
    events = _events(engine.result())
    assert events[:3] == [(6, "consecutive_losses", "trip", "", 0),
                          (12, "consecutive_losses", "release", "operator", 6),
                          (18, "consecutive_losses", "trip", "", 0)]


def test_a_manual_pause_is_never_released_by_a_day_a_cooldown_or_a_reset() -> None:
    bars, decisions = _losing_flips(3)
    config = EngineConfig(fee_bps=0, max_position=1.0, breaker_cooldown_bars=2)
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 3:
            engine.ledger.pause()
        if i == 30:
            engine.ledger.reset_breakers()
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i >= 3:
            assert engine.ledger.tripped == ["paused"], i
    result = engine.result()
    assert result.breaker_events.empty  # a pause is an operator's command, not a breaker event
    assert result.fills["bar"].tolist() == [1, 2]  # bar 2's entry, due at bar 3's open, is blocked, and all later
    assert result.paused_bars == len(bars) - 3
    engine.ledger.resume()
    assert engine.ledger.tripped == []


def test_a_snapshot_of_the_earlier_state_layout_restores_with_its_latched_breaker() -> None:
    bars, decisions = _losing_flips(2)
    config = EngineConfig(fee_bps=10, max_position=1.0, breaker_cooldown_bars=5,
                          **{**NO_BREAKERS, "max_consecutive_losses": 3})
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 8:
            break
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    assert engine.ledger.tripped == ["consecutive_losses"]
    data = json.loads(engine.snapshot())
    ledger = json.loads(data["ledger"])
    ledger["i"] = ledger["i"][:LEGACY_ISTATE_SLOTS]  # what a runtime saved before releases were tracked
    data["ledger"] = json.dumps(ledger)
    restored = Engine(config, ("flip",))
    restored.restore(json.dumps(data))
    assert restored.ledger.tripped == ["consecutive_losses"]
    for i, row in enumerate(bars.itertuples(index=False)):
        if i >= 8:
            restored.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    events = restored.result().breaker_events
    release = events[events["action"] == "release"].iloc[0]
    assert release["timestamp"] == bars["timestamp"].iloc[13]  # its cool-down counted from the restore (bar 8)
    assert release["bars_tripped"] == 5


def test_a_restored_engine_drains_before_its_first_bar_and_steps_on_unchanged() -> None:
    """A runtime commits between bars (a stale feed's pause, a reconciliation) before a restored sleeve has had a
    bar: the drain then has no bar of this process to keep, and the engine must go on as if it had not drained."""
    bars, decisions = _losing_flips(1)
    config = EngineConfig(fee_bps=10, max_position=1.0, **NO_BREAKERS)
    aims, codes = _decide(len(bars), decisions)
    whole = Engine(config, ("flip",))
    first = Engine(config, ("flip",))
    for i, row in enumerate(bars.itertuples(index=False)):
        whole.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i < 9:
            first.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    restored = Engine(config, ("flip",))
    restored.restore(first.snapshot())
    drained = restored.drain()
    assert drained.fills.empty and drained.trades.empty
    assert (restored.ledger.units, restored.ledger.cash, restored.bars_seen) == (
        first.ledger.units, first.ledger.cash, first.bars_seen)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i >= 9:
            restored.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    assert (restored.ledger.units, restored.ledger.cash) == (whole.ledger.units, whole.ledger.cash)
    later = restored.result().trades
    assert later["exit_time"].tolist() == whole.result().trades["exit_time"].tolist()[-len(later):]
