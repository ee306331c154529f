"""The Telegram edge (runtime/notify/ and pipeline/services/telegram.py), driven through the real python-telegram-bot
client against a local fake Bot API server (tests/fakes/telegram_server.py)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from pipeline.clock import FixedClock
from pipeline.services.telegram import TelegramSender
from runtime.notify import (
    COMMAND_SOURCE,
    CommandBot,
    Notifier,
    NotifierStats,
    breaker_event_message,
    breaker_message,
    error_message,
    fill_message,
    parse_command,
    start_message,
    stop_message,
)
from tests import waiting
from tests.conftest import REPO, shared_file
from tests.fakes.telegram_server import FakeTelegram

TOKEN = "123456:SECRET-TOKEN-abc"
CHAT_A = 111
CHAT_B = -222
STRANGER = 999
CHATS = [CHAT_A, CHAT_B]

# python-telegram-bot warns about its own int-to-timedelta transition when it builds a RetryAfter error.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


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


# --- notifications -----------------------------------------------------------------------------------


def test_a_message_reaches_every_allow_listed_chat(notifier: Notifier, server: FakeTelegram) -> None:
    assert notifier.send("Fill: BUY 0.015 BTC/USDT @ 64,210.50", timeout=5) is True

    assert server.texts_to(CHAT_A) == ["Fill: BUY 0.015 BTC/USDT @ 64,210.50"]
    assert server.texts_to(CHAT_B) == ["Fill: BUY 0.015 BTC/USDT @ 64,210.50"]
    assert {request.token for request in server.requests} == {TOKEN}  # the real token goes over the wire
    assert notifier.stats.delivered == 1


def test_send_only_queues_and_flush_waits_for_delivery(notifier: Notifier, server: FakeTelegram) -> None:
    server.fail_next(delay_s=0.5)  # a slow Telegram must not slow the trading loop down

    assert notifier.send("slow one") is True
    assert notifier.stats.delivered == 0  # send returned while Telegram was still answering (0.5 s)

    assert notifier.flush(timeout=5) is True
    assert server.texts_to(CHAT_A) == ["slow one"]
    assert server.texts_to(CHAT_B) == ["slow one"]


@pytest.mark.parametrize("token", [None, "", "   "])
def test_without_a_token_notifications_are_off(
    token: str | None, server: FakeTelegram, desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.notify")
    notifier = Notifier(token, CHATS, api_url=server.url)
    notifier.start()
    CommandBot(notifier, desk, desk).start()

    assert notifier.send("hello") is False
    assert notifier.send("hello again", timeout=1) is False
    assert notifier.flush(timeout=1) is True
    notifier.stop()

    assert server.requests == []
    assert not notifier.enabled
    off = [r for r in caplog.records if r.getMessage() == "telegram notifications are off: no token configured"]
    assert len(off) == 1
    assert off[0].levelno == logging.INFO


def test_a_burst_past_flood_control_waits_the_retry_after_and_loses_nothing(
    make_notifier: Callable[..., Notifier], server: FakeTelegram, fake_time: FakeTime
) -> None:
    notifier = make_notifier(chat_ids=[CHAT_A])
    notifier.start()
    server.flood_after(3, retry_after=1)  # Telegram refuses the 4th message of the burst: 429, retry after 1 s
    burst = [f"message {number}" for number in range(1, 7)]

    for text in burst:
        assert notifier.send(text) is True
    assert notifier.flush(timeout=10) is True

    assert server.texts_to(CHAT_A) == burst  # every message once, in order
    sends = server.requests_to("sendMessage")
    assert [r.status for r in sends] == [200, 200, 200, 429, 200, 200, 200]
    assert sends[3].params["text"] == sends[4].params["text"] == "message 4"
    assert sends[4].received_at - sends[3].answered_at >= 1.0  # nothing more reached Telegram within retry_after
    assert fake_time.sleeps == []  # the rate limiter waited, not the network back-off
    assert notifier.stats == NotifierStats(queued=0, delivered=6, failed=0, dropped=0)


def test_flood_control_that_persists_past_the_retries_drops_only_that_message(
    make_notifier: Callable[..., Notifier], server: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(chat_ids=[CHAT_A], max_retries=1)
    notifier.start()
    server.fail_next(status=429, retry_after=1, times=2)

    assert notifier.send("refused twice", timeout=10) is False
    assert notifier.send("next one", timeout=10) is True

    assert [r.status for r in server.requests_to("sendMessage")] == [429, 429, 200]
    assert server.texts_to(CHAT_A) == ["next one"]
    assert any(
        r.levelno == logging.ERROR and r.name == "runtime.notify" and "flood control" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("fault", "expected_wait"),
    [
        pytest.param({"status": 500}, 1.0, id="500"),
        pytest.param({"status": 502}, 1.0, id="502"),
        pytest.param({"delay_s": 1.5}, 1.0, id="timeout"),
        pytest.param({"drop": True}, 1.0, id="dropped-connection"),
    ],
)
def test_a_failed_request_is_retried_then_succeeds(
    fault: dict[str, Any],
    expected_wait: float,
    make_notifier: Callable[..., Notifier],
    server: FakeTelegram,
    fake_time: FakeTime,
) -> None:
    notifier = make_notifier(chat_ids=[CHAT_A], timeout_s=0.4, backoff_s=1.0)
    notifier.start()
    server.fail_next(**fault)

    assert notifier.send("breaker tripped", timeout=10) is True

    assert fake_time.sleeps == [pytest.approx(expected_wait)]  # the back-off
    assert len(server.requests_to("sendMessage")) == 2
    assert "breaker tripped" in server.texts_to(CHAT_A)
    assert server.pending_faults == 0


def test_backoff_doubles_between_retries(
    make_notifier: Callable[..., Notifier], server: FakeTelegram, fake_time: FakeTime
) -> None:
    notifier = make_notifier(chat_ids=[CHAT_A], backoff_s=0.5, max_backoff_s=1.5)
    notifier.start()
    server.fail_next(status=500, times=4)

    assert notifier.send("finally", timeout=10) is True
    assert fake_time.sleeps == [0.5, 1.0, 1.5, 1.5]


def test_a_permanent_refusal_is_not_retried_and_other_chats_still_get_the_message(
    notifier: Notifier, server: FakeTelegram, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(status=400, description="Bad Request: chat not found")

    assert notifier.send("hello", timeout=5) is False  # not every chat got it

    assert server.texts_to(CHAT_B) == ["hello"]
    assert len(server.requests_to("sendMessage")) == 2  # one try per chat, no retry of the 400
    assert fake_time.sleeps == []
    assert any(
        r.levelno == logging.ERROR and str(CHAT_A) in r.getMessage() and "chat not found" in r.getMessage().lower()
        for r in caplog.records
    )


def test_exhausted_retries_return_false_keep_the_notifier_working_and_never_log_the_token(
    make_notifier: Callable[..., Notifier],
    server: FakeTelegram,
    desk: Desk,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: this module, python-telegram-bot, httpx, httpcore
    notifier = make_notifier(chat_ids=[CHAT_A], max_retries=2)
    notifier.start()
    command_bot = CommandBot(notifier, desk, desk, clock=clock, poll_timeout_s=1)
    command_bot.start()
    server.fail_next(status=500, times=3)
    server.fail_next(drop=True, method="getUpdates")

    assert notifier.send("lost", timeout=10) is False
    assert len(server.requests_to("sendMessage")) == 3
    assert notifier.send("next one", timeout=10) is True  # the thread is still alive and well
    assert server.texts_to(CHAT_A) == ["next one"]
    server.push_message(CHAT_A, "/status")
    wait_until(lambda: Desk.status in server.texts_to(CHAT_A))
    command_bot.stop()

    wrong = make_notifier(token="654321:OTHER-SECRET-xyz", chat_ids=[CHAT_A])  # refused by the server (401)
    wrong.start()
    assert wrong.send("refused", timeout=10) is False

    assert notifier.stats.failed == 1
    failures = [r for r in caplog.records if r.name == "runtime.notify" and r.levelno == logging.ERROR]
    assert any(f"chat {CHAT_A} not delivered after 3 attempts" in r.getMessage() for r in failures)
    assert any("Unauthorized" in r.getMessage() for r in failures)
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN, "SECRET-TOKEN-abc", "OTHER-SECRET-xyz"):
        assert secret not in logged
        assert secret not in repr(notifier) and secret not in repr(wrong)
    assert "REDACTED" in caplog.text  # the client library logged URLs, with the placeholder in them


def test_the_token_never_reaches_the_logs(
    make_notifier: Callable[..., Notifier],
    server: FakeTelegram,
    desk: Desk,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: ours, python-telegram-bot's, httpx's and httpcore's
    wrong_token = "654321:OTHER-SECRET-xyz"
    wrong = make_notifier(token=wrong_token, chat_ids=[CHAT_A])
    wrong.start()  # its check-in is refused (401)
    assert wrong.send("refused", timeout=10) is False
    notifier = make_notifier(chat_ids=[CHAT_A])
    command_bot = CommandBot(notifier, desk, desk, clock=clock, poll_timeout_s=1)
    command_bot.start()
    server.fail_next(status=502)
    server.fail_next(status=500, method="getUpdates")
    assert notifier.send("after a 502", timeout=10) is True
    server.push_message(CHAT_A, "/status")
    wait_until(lambda: Desk.status in server.texts_to(CHAT_A))
    command_bot.stop()
    sender = TelegramSender(TOKEN, [CHAT_A], server.url, backoff_s=0.0)
    assert sender.send_message("from a flow") == {CHAT_A: True}
    assert TelegramSender(wrong_token, [CHAT_A], server.url, max_retries=0).send_message("no") == {CHAT_A: False}

    assert {r.token for r in server.requests} == {TOKEN, wrong_token}  # the real tokens went over the wire
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)  # with every traceback
    for secret in (TOKEN, wrong_token, "SECRET-TOKEN-abc", "OTHER-SECRET-xyz", quote(TOKEN, safe="")):
        assert secret not in logged
        assert secret not in repr(notifier) + repr(wrong) + repr(sender)
    request_lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(request_lines) >= len(server.requests) - 1  # httpx logs every request's URL...
    assert all("/botREDACTED/" in line for line in request_lines)  # ...with the placeholder in it
    assert any("was rejected" in r.getMessage() for r in caplog.records)  # PTB's message that quotes the token
    assert any(r.name.startswith("telegram") and r.levelno == logging.DEBUG for r in caplog.records)


def test_the_sender_backs_off_on_server_errors_waits_out_flood_control_and_gives_up_on_refusals(
    server: FakeTelegram,
) -> None:
    waits: list[float] = []
    sender = TelegramSender(TOKEN, [CHAT_A, CHAT_B], server.url, backoff_s=0.5, sleep=waits.append)
    server.fail_next(status=502)
    server.fail_next(status=500)
    assert sender.send_message("after trouble") == {CHAT_A: True, CHAT_B: True}
    assert waits == [0.5, 1.0]  # exponential back-off

    server.flood_after(1, retry_after=1)
    assert sender.send_message("burst") == {CHAT_A: True, CHAT_B: True}
    flood = server.requests_to("sendMessage")[-3:]
    assert [r.status for r in flood] == [200, 429, 200]
    assert flood[2].received_at - flood[1].answered_at >= 1.0  # Telegram's retry_after was waited out
    assert waits == [0.5, 1.0]  # by the rate limiter, not the back-off

    server.fail_next(status=403)
    assert sender.send_message("blocked") == {CHAT_A: False, CHAT_B: True}
    assert len(server.requests_to("sendMessage")) == 4 + 3 + 2  # no retry of the refusal
    assert TelegramSender("999:WRONG", [CHAT_A], server.url, max_retries=0).send_message("nope") == {CHAT_A: False}
    assert server.texts_to(CHAT_A) == ["after trouble", "burst"]
    assert server.texts_to(CHAT_B) == ["after trouble", "burst", "blocked"]
    assert TelegramSender(None, [CHAT_A], server.url).send_message("off") == {}


def test_a_full_queue_drops_new_messages_with_a_warning(
    make_notifier: Callable[..., Notifier], server: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(max_queue=2)

    assert notifier.send("first") is True  # queued before start: delivered once started
    assert notifier.send("second") is True
    assert notifier.send("third") is False

    assert any(r.levelno == logging.WARNING and "dropped" in r.getMessage() for r in caplog.records)
    notifier.start()
    assert notifier.flush(timeout=5) is True
    assert server.texts_to(CHAT_A) == ["first", "second"]
    assert notifier.stats.dropped == 1


def test_stop_delivers_what_is_queued_then_refuses_more(notifier: Notifier, server: FakeTelegram) -> None:
    notifier.send("runtime stopped")
    notifier.stop(timeout=5)

    assert server.texts_to(CHAT_A) == ["runtime stopped"]
    assert not notifier.running
    assert notifier.send("too late") is False


# --- commands ----------------------------------------------------------------------------------------


def test_read_commands_reply_with_the_status_source_texts(bot: CommandBot, server: FakeTelegram) -> None:
    server.push_message(CHAT_A, "/status")
    server.push_message(CHAT_A, "/positions")
    server.push_message(CHAT_A, "/pnl@tradeforge_test_bot")

    wait_until(lambda: len(server.texts_to(CHAT_A)) == 3)
    assert server.texts_to(CHAT_A) == [Desk.status, Desk.positions, Desk.pnl]
    assert server.texts_to(CHAT_B) == []  # replies go back to the chat that asked only


def test_pause_and_resume_reach_the_command_sink(bot: CommandBot, server: FakeTelegram, desk: Desk) -> None:
    server.push_message(CHAT_A, "/pause")
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 1)
    server.push_message(CHAT_B, "/resume")
    wait_until(lambda: len(server.texts_to(CHAT_B)) == 1)

    assert desk.commands == [("pause", COMMAND_SOURCE), ("resume", COMMAND_SOURCE)]
    assert COMMAND_SOURCE == "telegram"
    assert "Pause submitted" in server.texts_to(CHAT_A)[0]
    assert "Resume submitted" in server.texts_to(CHAT_B)[0]


def test_flatten_is_issued_only_after_confirmation(bot: CommandBot, server: FakeTelegram, desk: Desk) -> None:
    server.push_message(CHAT_A, "/flatten")
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 1)

    assert "/flatten confirm" in server.texts_to(CHAT_A)[0]
    assert desk.commands == []

    server.push_message(CHAT_A, "/flatten confirm")
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 2)
    assert desk.commands == [("flatten", "telegram")]
    assert "Flatten submitted" in server.texts_to(CHAT_A)[1]


def test_a_late_or_foreign_flatten_confirmation_does_nothing(
    bot: CommandBot, server: FakeTelegram, desk: Desk, clock: FixedClock
) -> None:
    server.push_message(CHAT_A, "/flatten confirm")  # nothing asked for
    server.push_message(CHAT_A, "/flatten")
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 2)
    server.push_message(CHAT_B, "/flatten confirm")  # another chat cannot confirm chat A's request
    wait_until(lambda: len(server.texts_to(CHAT_B)) == 1)
    clock.set(clock.now() + pd.Timedelta(seconds=61))
    server.push_message(CHAT_A, "/flatten confirm")  # too late
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 3)

    assert desk.commands == []
    assert server.texts_to(CHAT_A)[0].startswith("Nothing to confirm")
    assert server.texts_to(CHAT_B)[0].startswith("Nothing to confirm")
    assert server.texts_to(CHAT_A)[2].startswith("Nothing to confirm")


def test_a_command_from_an_unknown_chat_is_ignored_and_logged(
    bot: CommandBot, server: FakeTelegram, desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    server.push_message(STRANGER, "/flatten")
    server.push_message(STRANGER, "/pause")
    server.push_message(CHAT_A, "/status")  # handled after the stranger's: marks that they were seen
    wait_until(lambda: server.texts_to(CHAT_A) == [Desk.status])

    assert server.texts_to(STRANGER) == []
    assert desk.commands == []
    ignored = [r for r in caplog.records if r.levelno == logging.WARNING and str(STRANGER) in r.getMessage()]
    assert len(ignored) == 2
    assert all(r.name == "runtime.notify" for r in ignored)


def test_no_command_from_an_unknown_chat_is_ever_acted_on(
    bot: CommandBot, server: FakeTelegram, desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    group = -333  # a group the bot was added to, not on the allow-list
    commands = ["/pause", "/resume", "/flatten", "/flatten confirm", "/status", "/positions", "/pnl", "/help",
                "/buy BTC"]
    for text in commands:
        server.push_message(STRANGER, text)
        server.push_message(group, text, user_id=CHAT_A)  # an allow-listed operator, but in a foreign chat
    server.push_message(CHAT_A, "/positions")  # handled after every foreign one
    wait_until(lambda: server.texts_to(CHAT_A) == [Desk.positions])

    assert desk.commands == []
    assert {m.chat_id for m in server.sent} == {CHAT_A}  # not even an answer went anywhere else
    ignored = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "ignored" in r.getMessage()]
    assert sum(str(STRANGER) in text for text in ignored) == len(commands)
    assert sum(str(group) in text for text in ignored) == len(commands)


def test_each_update_is_handled_once(bot: CommandBot, server: FakeTelegram, desk: Desk) -> None:
    update_id = server.push_message(CHAT_A, "/pause")
    wait_until(lambda: desk.commands == [("pause", "telegram")])
    wait_until(lambda: any(r.int_param("offset") == update_id + 1 for r in server.requests_to("getUpdates")))
    polls = len(server.requests_to("getUpdates"))
    wait_until(lambda: len(server.requests_to("getUpdates")) >= polls + 1)

    assert desk.commands == [("pause", "telegram")]
    assert server.pending_updates == 0
    assert len(server.texts_to(CHAT_A)) == 1


def test_unknown_commands_get_help_and_plain_text_is_ignored(bot: CommandBot, server: FakeTelegram) -> None:
    server.push_message(CHAT_A, "good morning")
    server.push_message(CHAT_A, "/status@some_other_bot")
    server.push_message(CHAT_A, "/buy BTC")
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 1)

    reply = server.texts_to(CHAT_A)[0]
    assert reply.startswith("Unknown command /buy")
    assert "/flatten" in reply and "/status" in reply


def test_a_stale_command_is_not_carried_out(
    bot: CommandBot, server: FakeTelegram, desk: Desk, clock: FixedClock
) -> None:
    server.push_message(CHAT_A, "/pause", date=clock.now().timestamp() - 3600)
    wait_until(lambda: len(server.texts_to(CHAT_A)) == 1)

    assert desk.commands == []
    assert server.texts_to(CHAT_A)[0].startswith("Ignored /pause")


def test_polling_survives_telegram_trouble(bot: CommandBot, server: FakeTelegram) -> None:
    server.fail_next(drop=True, method="getUpdates")
    server.fail_next(status=502, method="getUpdates")
    server.push_message(CHAT_A, "/status")

    wait_until(lambda: server.texts_to(CHAT_A) == [Desk.status])
    assert server.pending_faults == 0


def test_a_failing_status_source_gets_a_short_reply(
    notifier: Notifier, server: FakeTelegram, desk: Desk, clock: FixedClock
) -> None:
    class Broken(Desk):
        def pnl_text(self) -> str:
            raise RuntimeError("state store locked")

    command_bot = CommandBot(notifier, Broken(), desk, clock=clock, poll_timeout_s=1)
    command_bot.start()
    try:
        server.push_message(CHAT_A, "/pnl")
        wait_until(lambda: len(server.texts_to(CHAT_A)) == 1)
    finally:
        command_bot.stop()
    assert server.texts_to(CHAT_A) == ["/pnl is unavailable right now (RuntimeError)."]


# --- formatting --------------------------------------------------------------------------------------

AT = datetime.fromisoformat("2026-11-21T12:00:00+00:00")


def test_messages_are_plain_text_with_exact_amounts_and_utc_times() -> None:
    fill = fill_message(
        "BTC/USDT",
        "buy",
        Decimal("0.01500"),
        Decimal("64210.50"),
        AT,
        fee=Decimal("0.963"),
        fee_currency="USDT",
        venue="paper",
        strategy="sma_cross",
        reason="entry",
    )
    assert fill == (
        "Fill: BUY 0.01500 BTC/USDT @ 64,210.50\n"
        "fee 0.963 USDT | paper | strategy sma_cross\n"
        "reason: entry\n"
        "2026-11-21 12:00:00 UTC"
    )
    breaker = breaker_message("max_drawdown", AT, value=Decimal("0.1250"), limit=Decimal("0.10"))
    assert breaker.splitlines()[:2] == ["Circuit breaker tripped: max_drawdown", "value 0.1250 | limit 0.10"]
    error = error_message("feed BTC/USDT", ConnectionError("exchange unreachable"), AT, action="retrying")
    assert error.splitlines()[0] == "Error in feed BTC/USDT: ConnectionError: exchange unreachable"
    started = start_message("paper", AT, broker="paper", symbols=["BTC/USDT", "ETH/USDT"], equity=Decimal("1E+4"))
    assert "symbols: BTC/USDT, ETH/USDT" in started and "equity 10,000" in started
    stopped = stop_message("operator request", pd.Timestamp("2026-11-21 13:00", tz="Europe/Paris"))
    assert stopped == "tradeforge runtime stopped: operator request\n2026-11-21 12:00:00 UTC"


def test_a_breaker_trip_says_how_its_rule_releases() -> None:
    drawdown = breaker_message("max_drawdown", AT, value=Decimal("0.25"), limit=Decimal("0.20"), strategy="main")
    assert drawdown == (
        "Circuit breaker tripped: max_drawdown\n"
        "value 0.25 | limit 0.20 | strategy main\n"
        "new entries are blocked until an operator resets the breaker\n"
        "2026-11-21 12:00:00 UTC"
    )
    cooled = breaker_message("consecutive_losses", AT, cooldown_bars=24)
    assert cooled.splitlines()[1] == (
        "new entries are blocked until an operator resets the breaker or the 24-bar cool-down ends"
    )
    for daily in ("daily_loss", "trades_per_day"):
        assert breaker_message(daily, AT, cooldown_bars=24).splitlines()[1] == (
            "new entries are blocked until the next trading day"
        )
        assert breaker_message(daily, AT, daily_release=False).splitlines()[1] == (
            "new entries are blocked until an operator resets the breaker"
        )
    assert breaker_message("paused", AT).splitlines()[1] == "new entries are blocked until an operator resumes trading"
    assert breaker_message("max_drawdown", AT, then="flattening").splitlines()[1] == "flattening"


def test_a_breaker_release_is_a_released_message() -> None:
    released = breaker_message(
        "daily_loss",
        AT,
        value=Decimal("0.06"),
        limit=Decimal("0.05"),
        action="release",
        released_by="new_day",
        bars_tripped=5,
    )
    assert released == (
        "Circuit breaker released: daily_loss\n"
        "value 0.06 | limit 0.05\n"
        "released at the next trading day after 5 bars\n"
        "new entries are allowed again\n"
        "2026-11-21 12:00:00 UTC"
    )
    assert (
        breaker_message("max_drawdown", AT, action="release", released_by="cooldown", bars_tripped=1).splitlines()[1]
        == "released by the cool-down after 1 bar"
    )
    assert breaker_message("max_drawdown", AT, action="release", released_by="operator").splitlines()[1:3] == [
        "released by an operator's reset",
        "new entries are allowed again",
    ]
    assert breaker_message("max_drawdown", AT, action="release").splitlines()[1] == "new entries are allowed again"
    with pytest.raises(ValueError, match="'trip' or 'release'"):
        breaker_message("max_drawdown", AT, action="entries stay blocked")


def test_engine_breaker_events_become_breaker_messages() -> None:
    events = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2026-11-21 12:00", "2026-11-22 00:00"], utc=True),
            "rule": ["daily_loss", "daily_loss"],
            "value": [0.0612345, 0.0612345],
            "threshold": [0.05, 0.05],
            "action": ["trip", "release"],
            "released_by": ["", "new_day"],
            "bars_tripped": [0, 12],
        }
    )
    trip, release = (breaker_event_message(row._asdict(), strategy="main") for row in events.itertuples(index=False))

    assert trip == (
        "Circuit breaker tripped: daily_loss\n"
        "value 0.06123 | limit 0.05 | strategy main\n"
        "new entries are blocked until the next trading day\n"
        "2026-11-21 12:00:00 UTC"
    )
    assert release == (
        "Circuit breaker released: daily_loss\n"
        "value 0.06123 | limit 0.05 | strategy main\n"
        "released at the next trading day after 12 bars\n"
        "new entries are allowed again\n"
        "2026-11-22 00:00:00 UTC"
    )
    portfolio = {"timestamp": AT, "rule": "portfolio_drawdown", "value": 0.25, "threshold": 0.2, "action": "trip",
                 "released_by": "", "bars_tripped": 0}
    assert breaker_event_message(portfolio, strategy="portfolio", cooldown_bars=24).splitlines()[1:3] == [
        "value 0.25 | limit 0.2 | strategy portfolio",
        "new entries are blocked until an operator resets the breaker or the 24-bar cool-down ends",
    ]


def test_every_breaker_event_of_a_real_run_becomes_its_breaker_message() -> None:
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-2000:].reset_index(drop=True)
    engine = {"max_position": 1.0, "daily_loss": 0.01, "max_trades_per_day": 4, "max_consecutive_losses": 3,
              "max_drawdown": None, "breaker_cooldown_bars": 12}
    config = PortfolioConfig.model_validate({
        "cash": 100_000,
        "strategies": [{"id": "main", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1h",
                        "allocation": 1.0, "params": {"fast": "3", "slow": "8"}, "engine": engine}],
    })
    events = run_portfolio(config, lambda symbol, tf: hours).sleeves["main:BTC/USDT"].breaker_events
    assert {"new_day", "cooldown"} <= set(events["released_by"])

    for row in events.itertuples(index=False):
        lines = breaker_event_message(row._asdict(), strategy="main", cooldown_bars=12).splitlines()
        assert lines[0] == f"Circuit breaker {'tripped' if row.action == 'trip' else 'released'}: {row.rule}"
        assert lines[1] == f"value {row.value:.4g} | limit {row.threshold:.4g} | strategy main"
        assert lines[-1] == row.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC")
        if row.action == "trip":
            daily = row.rule in ("daily_loss", "trades_per_day")
            assert lines[2] == "new entries are blocked " + (
                "until the next trading day" if daily
                else "until an operator resets the breaker or the 12-bar cool-down ends")
        else:
            how = "at the next trading day" if row.released_by == "new_day" else "by the cool-down"
            assert lines[2] == f"released {how} after {row.bars_tripped} bar{'' if row.bars_tripped == 1 else 's'}"
            assert lines[3] == "new entries are allowed again"


def test_the_message_texts_load_without_the_telegram_client_library() -> None:
    check = (
        "import sys; from runtime.notify import breaker_event_message, fill_message; "
        "loaded = sorted(m for m in ('telegram', 'httpx', 'tenacity') if m in sys.modules); print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"  # a runtime without Telegram never pays for it


def test_a_naive_time_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        stop_message("done", datetime(2026, 11, 21, 12, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/status", ("status", [])),
        ("  /Flatten   CONFIRM ", ("flatten", ["confirm"])),
        ("/pnl@tradeforge_test_bot", ("pnl", [])),
        ("/pnl@other_bot", None),
        ("hello", None),
        ("/", None),
    ],
)
def test_parse_command(text: str, expected: tuple[str, list[str]] | None) -> None:
    assert parse_command(text, "tradeforge_test_bot") == expected
