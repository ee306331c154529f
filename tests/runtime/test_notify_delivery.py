"""Telegram delivery through the real python-telegram-bot client: every chat, flood control, retries, back-off."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from pipeline.clock import FixedClock
from pipeline.services.telegram import TelegramSender
from runtime.notify import CommandBot, Notifier, NotifierStats
from tests.fakes.telegram_server import FakeTelegram
from tests.runtime import telegram_helpers
from tests.runtime.telegram_helpers import CHAT_A, CHAT_B, TOKEN, Desk, FakeTime, wait_until

server = telegram_helpers.server  # the fake Bot API server, the notifiers on it and a Desk (the fixtures)
fake_time = telegram_helpers.fake_time
make_notifier = telegram_helpers.make_notifier
notifier = telegram_helpers.notifier
desk = telegram_helpers.desk

# python-telegram-bot warns about its own int-to-timedelta transition when it builds a RetryAfter error.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


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
