"""The notifier's lifecycle: off without a token, a bounded queue before start, and a stop that delivers first."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from runtime.notify import CommandBot, Notifier
from tests.fakes.telegram_server import FakeTelegram
from tests.runtime import telegram_helpers
from tests.runtime.telegram_helpers import CHAT_A, CHATS, Desk

server = telegram_helpers.server  # the fake Bot API server, the notifiers on it and a Desk (the fixtures)
fake_time = telegram_helpers.fake_time
make_notifier = telegram_helpers.make_notifier
notifier = telegram_helpers.notifier
desk = telegram_helpers.desk

# python-telegram-bot warns about its own int-to-timedelta transition when it builds a RetryAfter error.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


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
