"""Commands from Telegram chats: the CommandBot's replies, confirmations, the chat allow-list and the parser."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from runtime.notify import COMMAND_SOURCE, CommandBot, Notifier, parse_command
from tests.fakes.telegram_server import FakeTelegram
from tests.runtime import telegram_helpers
from tests.runtime.telegram_helpers import CHAT_A, CHAT_B, STRANGER, Desk, wait_until

server = telegram_helpers.server  # the fake Bot API server, the notifiers on it and a Desk (the fixtures)
fake_time = telegram_helpers.fake_time
make_notifier = telegram_helpers.make_notifier
notifier = telegram_helpers.notifier
desk = telegram_helpers.desk
bot = telegram_helpers.bot

# python-telegram-bot warns about its own int-to-timedelta transition when it builds a RetryAfter error.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


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
