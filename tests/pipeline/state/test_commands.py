"""The process record and its commands: status, heartbeat, deployments, control commands, runtime events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.state import ControlCommand, StateStore
from tests.pipeline.state.records import MINUTE, T0


def test_status_heartbeat_and_deployments(store: StateStore) -> None:
    assert store.bot_state() is None
    store.set_status("running", "started by the operator", mode="paper", at=T0)
    store.set_status("paused", "daily loss limit", at=T0 + MINUTE)
    store.heartbeat(T0 + 3 * MINUTE)
    store.heartbeat(T0 + 2 * MINUTE)
    bot = store.bot_state()
    assert bot is not None
    assert (bot.mode, bot.status, bot.status_reason) == ("paper", "paused", "daily loss limit")
    assert (bot.started_at, bot.heartbeat_at) == (T0, T0 + 3 * MINUTE)
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status("sleeping", "")

    first = store.record_deployment("btc", "lstm", "3", "run-a", "promoted", activated_at=T0)
    store.record_deployment("eth", "gru", "1", "run-b", "promoted", activated_at=T0 + MINUTE)
    second = store.record_deployment("btc", "lstm", "4", "run-c", "retrained", activated_at=T0 + 2 * MINUTE)
    assert [d.id for d in store.deployments("btc")] == [first, second]
    assert [d.version for d in store.deployments()] == ["3", "1", "4"]


def test_commands_add_pending_acknowledge(open_store: Callable[..., StateStore]) -> None:
    clock = FixedClock(pd.Timestamp(T0))
    store = open_store(clock=clock)
    pause = store.add_command("pause", "dashboard")
    clock.set(pd.Timestamp(T0 + MINUTE))
    flatten = store.add_command("flatten", "telegram", sleeve="btc")
    pending = store.pending_commands()
    assert [(c.id, c.command, c.source, c.sleeve) for c in pending] == [
        (pause, "pause", "dashboard", None), (flatten, "flatten", "telegram", "btc")]
    assert pending[0].created_at == T0

    assert store.acknowledge(pause, "paused 2 sleeves", T0 + 2 * MINUTE) is True
    assert store.acknowledge(pause, "again", T0 + 3 * MINUTE) is False
    assert [c.id for c in store.pending_commands()] == [flatten]
    with store.transaction() as session:
        done = session.get(ControlCommand, pause)
        assert done is not None and (done.result, done.acknowledged_at) == ("paused 2 sleeves", T0 + 2 * MINUTE)
    with pytest.raises(ValueError, match="no control command with id 999"):
        store.acknowledge(999, "", T0)
    with pytest.raises(ValueError, match=r"command 'liquidate' is not known.*'flatten'"):
        store.add_command("liquidate", "cli")
    with pytest.raises(ValueError, match=r"command source 'email' is not known.*'telegram'"):
        store.add_command("stop", "email")
    assert len(store.pending_commands()) == 1


def test_runtime_events_are_recorded_in_order_and_filtered(store: StateStore) -> None:
    first = datetime(2024, 1, 1, tzinfo=UTC)
    store.record_event("stale", "binance:BTC/USDT:1m has no bar for 3 bars", sleeve="main:BTC/USDT", at=first)
    store.record_event("fresh", "bars again", at=first.replace(hour=1))
    store.record_event("stale", "again", at=first.replace(hour=2))
    assert [e.kind for e in store.events()] == ["stale", "fresh", "stale"]
    assert [e.detail for e in store.events("stale", since=first.replace(hour=1))] == ["again"]
    assert store.events("stale")[0].sleeve == "main:BTC/USDT"
    with pytest.raises(ValueError, match="at"):
        store.record_event("stale", "naive", at=datetime(2024, 1, 1))
