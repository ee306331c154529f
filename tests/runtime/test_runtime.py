"""The paper runtime: parity with the backtest, recovery, control commands, graceful stop and a kill drill."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.backtest.portfolio import load_portfolio, run_portfolio
from pipeline.domain import Timeframe
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node, StartupError
from tests.conftest import REPO, shared_file
from tests.waiting import ProcessedBars, wait_until
from tradeforge_cli.app import app

M1 = Timeframe.parse("1m")
PORTFOLIO = """
cash = 100000
[caps]
max_drawdown = 0.5

[[strategies]]
id = "trend"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.6
params = { fast = 10, slow = 30 }
engine = { max_position = 1.0, max_consecutive_losses = 8, daily_loss = 0.03, stop_loss = 0.01 }

[[strategies]]
id = "reversion"
strategy = "rsi_reversion"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.4
engine = { max_position = 0.5 }
"""


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[200_000:260_000].reset_index(drop=True)


def _node(store: StateStore, config_path: Path, bars: pd.DataFrame) -> Node:
    config = load_portfolio(config_path)
    key = "file:BTC/USDT:1m"
    return Node(store, config, ReplayFeed({key: bars}, M1), {"trend:BTC/USDT": key, "reversion:BTC/USDT": key},
                PaperBroker())


def _stored_fills(store: StateStore) -> pd.DataFrame:
    rows = [(f.sleeve, pd.Timestamp(f.at), f.side, float(f.qty), float(f.price), float(f.fee), f.reason)
            for f in store.fills()]
    frame = pd.DataFrame(rows, columns=["sleeve", "timestamp", "side", "qty", "price", "fee", "reason"])
    return frame.sort_values(["timestamp", "sleeve", "side"]).reset_index(drop=True)


def _backtest_fills(config_path: Path, bars: pd.DataFrame) -> pd.DataFrame:
    result = run_portfolio(load_portfolio(config_path), lambda symbol, tf: bars)
    parts = [r.fills.assign(sleeve=key) for key, r in result.sleeves.items()]
    frame = pd.concat(parts)[["sleeve", "timestamp", "side", "qty", "price", "fee", "reason"]]
    return frame.sort_values(["timestamp", "sleeve", "side"]).reset_index(drop=True)


def _latched(events: pd.DataFrame) -> set[str]:
    """The rules whose last breaker event is a trip: still tripped at the end of the run."""
    if events.empty:
        return set()
    last = events.groupby("rule", sort=False)["action"].last()
    return set(last.index[last == "trip"])


def _assert_same_fills(stored: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(stored) == len(expected) > 100
    assert (stored["sleeve"] == expected["sleeve"]).all()
    assert (stored["side"] == expected["side"]).all()
    assert (stored["reason"] == expected["reason"]).all()
    assert (stored["timestamp"] == pd.to_datetime(expected["timestamp"])).all()
    for column in ("qty", "price", "fee"):  # floats survive the Decimal store bit for bit
        assert np.array_equal(stored[column].to_numpy(), expected[column].to_numpy()), column


def test_paper_replay_produces_exactly_the_backtests_fills(tmp_path: Path, minutes: pd.DataFrame) -> None:
    config_path = tmp_path / "portfolio.toml"
    config_path.write_text(PORTFOLIO)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    node = _node(store, config_path, minutes)
    node.start(fresh=True)
    summary = node.run()
    assert summary.bars == len(minutes)
    _assert_same_fills(_stored_fills(store), _backtest_fills(config_path, minutes))
    assert len(store.trades()) == summary.trades
    assert store.bot_state() is not None
    assert store.bot_state().status == "stopped"  # type: ignore[union-attr]


def test_a_restart_continues_exactly_where_the_last_run_stopped(tmp_path: Path, minutes: pd.DataFrame) -> None:
    config_path = tmp_path / "portfolio.toml"
    config_path.write_text(PORTFOLIO)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = _node(StateStore(url), config_path, minutes.iloc[:25_000])
    first.start(fresh=True)
    first.run()
    store = StateStore(url)
    second = _node(store, config_path, minutes)  # the feed now has more bars; the cursor says where to resume
    notes = second.start(fresh=False)
    assert any("restored" in note for note in notes)
    summary = second.run()
    assert summary.bars == len(minutes) - 25_000
    _assert_same_fills(_stored_fills(store), _backtest_fills(config_path, minutes))


def test_fresh_and_restore_are_explicit(tmp_path: Path, minutes: pd.DataFrame) -> None:
    config_path = tmp_path / "portfolio.toml"
    config_path.write_text(PORTFOLIO)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with pytest.raises(StartupError, match="start with --fresh"):
        _node(StateStore(url), config_path, minutes.iloc[:500]).start(fresh=False)
    node = _node(StateStore(url), config_path, minutes.iloc[:500])
    node.start(fresh=True)
    node.run()
    with pytest.raises(StartupError, match="--fresh refused"):
        _node(StateStore(url), config_path, minutes.iloc[:500]).start(fresh=True)


def test_control_commands_are_applied_and_acknowledged(tmp_path: Path, minutes: pd.DataFrame) -> None:
    config_path = tmp_path / "portfolio.toml"
    config_path.write_text(PORTFOLIO)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    node = _node(store, config_path, minutes)
    node.start(fresh=True)
    store.add_command("pause", "cli")
    summary = node.run()
    assert summary.commands == 1
    assert store.pending_commands() == []
    buys = [f for f in store.fills() if f.side == "buy"]
    assert buys == []  # paused from the first bar: no entry at all
    assert store.bot_state().status == "stopped"  # type: ignore[union-attr]

    other = StateStore(f"sqlite:///{tmp_path / 'other.db'}")
    node = _node(other, config_path, minutes)
    node.start(fresh=True)
    other.add_command("stop", "dashboard")
    assert node.run().stopped_by == "stop command from dashboard"


def test_runtime_cli_replay_summary_and_live_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     minutes: pd.DataFrame) -> None:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "bars.parquet"
    minutes.iloc[:20_000].to_parquet(path)
    args = ["runtime", "--mode", "paper", "--feed", "replay", "--data", str(path), "--speed", "max",
            "--strategy", "sma_cross", "--symbol", "BTC/USDT", "--param", "fast=10", "--param", "slow=30",
            "--fee-bps", "10", "--max-position", "1.0", "--no-breakers", "--json"]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "start with --fresh" in refused.stderr
    done = runner.invoke(app, [*args, "--fresh"])
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    backtest = json.loads(runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--data", str(path), "--param",
                                              "fast=10", "--param", "slow=30", "--fee-bps", "10", "--max-position",
                                              "1.0", "--no-breakers", "--json"]).stdout)
    assert summary["bars"] == 20_000
    assert summary["fills"] == backtest["fills"]
    assert summary["trades"] == backtest["trades"]
    assert summary["final_equity"] == backtest["final_equity"]
    queued = runner.invoke(app, ["runtime", "ctl", "pause", "--json"])
    assert queued.exit_code == 0, queued.stderr
    assert json.loads(queued.stdout)["command"] == "pause"
    live = runner.invoke(app, ["runtime", "--mode", "live", "--strategy", "sma_cross", "--symbol", "BTC/USDT",
                               "--data", str(path)])
    assert live.exit_code == 1
    assert "TRADEFORGE_LIVE_CONFIRM=yes" in live.stderr


def _runtime_process(data_dir: Path, data: Path, extra: list[str], speed: str = "max") -> subprocess.Popen[bytes]:
    env = {**os.environ, "TRADEFORGE_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "runtime", "--mode", "paper", "--feed", "replay", "--data", str(data),
               "--speed", speed, "--portfolio", str(data_dir.parent / "portfolio.toml"), "--json", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigterm_stops_gracefully(tmp_path: Path, minutes: pd.DataFrame) -> None:
    (tmp_path / "portfolio.toml").write_text(PORTFOLIO)
    data = tmp_path / "bars.parquet"
    minutes.iloc[:5000].to_parquet(data)
    process = _runtime_process(tmp_path / "data", data, ["--fresh"], speed="600")  # ten bars a second
    processed = ProcessedBars(tmp_path / "data" / "state" / "tradeforge.db", "file:BTC/USDT:1m",
                              minutes["timestamp"].iloc[:5000])
    try:
        wait_until(processed.reached(3), "the runtime to trade its first bars", process=process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate()
    finally:
        processed.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["stopped_by"] == "signal SIGTERM"
    assert 0 < summary["bars"] < 5000


KILLS = 20


@pytest.mark.slow
def test_kill_drill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGKILL the runtime 20 times, each time once the state store shows a random (seeded) number of further
    bars processed, and restart it each time; the end state equals an unbroken run."""
    (tmp_path / "portfolio.toml").write_text(PORTFOLIO)
    data = tmp_path / "bars.parquet"
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[200_000:400_000].reset_index(drop=True)
    bars.to_parquet(data)
    data_dir = tmp_path / "data"
    processed = ProcessedBars(data_dir / "state" / "tradeforge.db", "file:BTC/USDT:1m", bars["timestamp"])
    rng = random.Random(7)
    most = len(bars) // (2 * KILLS)  # at most half of the bars go to the kills; the last run replays the rest
    process = _runtime_process(data_dir, data, ["--fresh", "--batch", "200"])
    try:
        for kill in range(1, KILLS + 1):
            target = processed() + rng.randint(1, most)
            wait_until(processed.reached(target), f"{target} bars processed, for kill {kill} of {KILLS}",
                       process=process)
            process.send_signal(signal.SIGKILL)
            process.communicate()
            process = _runtime_process(data_dir, data, ["--batch", "200"])  # restores what the killed run saved
        _, err = process.communicate()
    finally:
        processed.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err.decode()
    store = StateStore(f"sqlite:///{data_dir / 'state' / 'tradeforge.db'}")
    stored = _stored_fills(store)
    assert len({f.fill_id for f in store.fills()}) == len(store.fills())
    _assert_same_fills(stored, _backtest_fills(tmp_path / "portfolio.toml", bars))
    reference = _backtest_fills(tmp_path / "portfolio.toml", bars)
    assert len(stored) == len(reference)
    result = run_portfolio(load_portfolio(tmp_path / "portfolio.toml"), lambda symbol, tf: bars)
    ledgers = store.ledgers()
    for key, sleeve in result.sleeves.items():
        assert float(ledgers[key].units) == sleeve.open_units  # positions equal the unbroken run's
        assert set(filter(None, ledgers[key].tripped.split(","))) == _latched(sleeve.breaker_events) | _latched(
            result.events)  # the breakers still latched at the end are those of the unbroken run


def test_telegram_notifies_and_takes_commands_only_from_allowed_chats(tmp_path: Path,
                                                                       minutes: pd.DataFrame) -> None:
    from tests.fakes.telegram_server import FakeTelegram

    token = "777001:RUNTIME-TEST-TOKEN"
    (tmp_path / "portfolio.toml").write_text(PORTFOLIO)
    data = tmp_path / "bars.parquet"
    minutes.iloc[:3000].to_parquet(data)
    with FakeTelegram(token) as fake:
        env_extra = {"TRADEFORGE_TELEGRAM_TOKEN": token, "TRADEFORGE_TELEGRAM_CHAT_IDS": "4242",
                     "TRADEFORGE_TELEGRAM_API_URL": fake.url, "TRADEFORGE_DATA_DIR": str(tmp_path / "data")}
        command = [sys.executable, "-m", "runtime", "--mode", "paper", "--data", str(data), "--speed", "300",
                   "--portfolio", str(tmp_path / "portfolio.toml"), "--fresh", "--json"]
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env_extra}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        wait_until(lambda: any("runtime started" in text for text in fake.texts_to(4242)),
                   "the start message", process=process)
        fake.push_message(999, "/pause")  # not allow-listed: ignored
        fake.push_message(4242, "/status")
        fake.push_message(4242, "/stop")  # not a Telegram command: help text only
        fake.push_message(4242, "/pause")
        store = StateStore(f"sqlite:///{tmp_path / 'data' / 'state' / 'tradeforge.db'}", create=False)

        def paused() -> bool:
            state = store.bot_state()
            return state is not None and state.status == "paused"

        wait_until(paused, "the runtime paused by the allowed chat", process=process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate()
        assert process.returncode == 0, err.decode()
        assert json.loads(out)["commands"] == 1  # only the allowed chat's /pause
        texts = fake.texts_to(4242)
        assert any("runtime started" in text for text in texts)
        assert any("paper runtime running" in text for text in texts)  # the /status reply
        assert any("command pause from telegram" in text for text in texts)
        assert any("runtime stopped: signal SIGTERM" in text for text in texts)
        assert fake.texts_to(999) == []
        assert token not in err.decode()
