"""The Telegram edge's test setup: a local fake Bot API server, notifiers on it, and a Desk for the CommandBot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline.clock import FixedClock
from runtime.notify import CommandBot, Notifier
from tests import waiting
from tests.fakes.telegram_server import FakeTelegram

TOKEN = "123456:SECRET-TOKEN-abc"
CHAT_A = 111
CHAT_B = -222
STRANGER = 999
CHATS = [CHAT_A, CHAT_B]


class FakeTime:
    """The notifier's wait between retries in tests: a sleep that returns at once and is recorded."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


class Desk:
    """A StatusSource and CommandSink that answers fixed texts and records what it was told."""

    status = "running | paper | last bar 2026-11-21 11:59 UTC"
    positions = "BTC/USDT long 0.015 @ 64,210.50"
    pnl = "today +12.30 USDT | total +1,204.55 USDT"

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def status_text(self) -> str:
        return self.status

    def positions_text(self) -> str:
        return self.positions

    def pnl_text(self) -> str:
        return self.pnl

    def submit(self, command: str, source: str) -> None:
        with self._lock:
            self.commands.append((command, source))


def wait_until(condition: Callable[[], bool]) -> None:
    waiting.wait_until(condition, "the expected traffic at the fake Telegram")


@pytest.fixture
def server(clock: FixedClock) -> Iterator[FakeTelegram]:
    with FakeTelegram(TOKEN, clock=lambda: clock.now().timestamp()) as fake:
        yield fake


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_notifier(server: FakeTelegram, fake_time: FakeTime) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(**overrides: Any) -> Notifier:
        options: dict[str, Any] = {
            "token": TOKEN,
            "chat_ids": CHATS,
            "api_url": server.url,
            "sleep": fake_time.sleep,
            "timeout_s": 3.0,
        }
        options.update(overrides)
        notifier = Notifier(**options)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop(timeout=2)


@pytest.fixture
def notifier(make_notifier: Callable[..., Notifier]) -> Notifier:
    made = make_notifier()
    made.start()
    return made


@pytest.fixture
def desk() -> Desk:
    return Desk()


@pytest.fixture
def bot(notifier: Notifier, desk: Desk, clock: FixedClock) -> Iterator[CommandBot]:
    command_bot = CommandBot(notifier, desk, desk, clock=clock, poll_timeout_s=1, retry_backoff_s=0.05)
    command_bot.start()
    yield command_bot
    command_bot.stop()
