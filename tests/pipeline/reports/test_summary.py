"""The daily summary on real runtime state, its stored files, and the synchronous Telegram sender (message and
photo) against a fake Bot API driven by the real python-telegram-bot client."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import urlsplit

import pytest

from pipeline.reports.summary import daily_summary, parse_day, summary_text, write_summary
from pipeline.services.telegram import TelegramSender
from pipeline.settings import Settings
from pipeline.state import PORTFOLIO, StateStore
from tests.fakes.telegram_server import FakeTelegram, _Handler, _Reply
from tests.pipeline.state.test_backup import btc_hours, paper_run, settings_at

TOKEN = "123456:SUMMARY-TOKEN"
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


class _PhotoHandler(_Handler):
    """The fake's handler, plus multipart bodies (how the Bot API receives uploaded photos)."""

    def _serve(self) -> None:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            super()._serve()
            return
        fake: PhotoTelegram = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename():
                files[str(name)] = bytes(payload)
            else:
                params[str(name)] = bytes(payload).decode()
        fake.uploads.append(files)
        reply = fake.answer(urlsplit(self.path).path, {**params, **{k: f"<{len(v)} bytes>" for k, v in files.items()}})
        payload_bytes = json.dumps(reply.payload).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload_bytes)))
        self.end_headers()
        self.wfile.write(payload_bytes)


class PhotoTelegram(FakeTelegram):
    """FakeTelegram that also answers ``sendPhoto`` and records each uploaded image."""

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__(token)
        self.uploads: list[dict[str, bytes]] = []
        self.photos: list[tuple[int, bytes, str]] = []
        self._httpd.RequestHandlerClass = _PhotoHandler

    def _route(self, method: str, params: dict[str, str]) -> _Reply:
        if method.lower() != "sendphoto":
            return super()._route(method, params)
        chat_id = int(params["chat_id"])
        image = self.uploads[-1].get("photo", b"")
        self.photos.append((chat_id, image, params.get("caption", "")))
        return _Reply.ok({"message_id": len(self.photos) + 1000, "date": 0, "chat": self._chat(chat_id, None),
                          "photo": [{"file_id": "p", "file_unique_id": "p", "width": 10, "height": 10}],
                          "caption": params.get("caption", "")})


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = settings_at(tmp_path_factory.mktemp("summary"))
    paper_run(settings.state_url, btc_hours(1500), batch=6)  # an equity mark every 6 hours
    return settings


def busiest_day(settings: Settings) -> date:
    with StateStore.read_only(settings.state_url) as store:
        days = [t.exit_time.date() for t in store.trades()]
    return max(set(days), key=days.count)


def test_the_summary_equals_the_trades_and_equity_in_the_store(state: Settings) -> None:
    day = busiest_day(state)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with StateStore.read_only(state.state_url) as store:
        summary = daily_summary(store, day)
        trades = [t for t in store.trades() if start <= t.exit_time < start + timedelta(days=1)]
        marks = store.equity("main:BTC/USDT")
    assert len(trades) >= 2
    sleeve = summary.sleeves[0]
    assert [s.sleeve for s in summary.sleeves] == ["main:BTC/USDT"]
    assert sleeve.trades == summary.portfolio.trades == len(trades)
    assert sleeve.realised_pnl == sum((t.pnl for t in trades), Decimal(0))
    assert sleeve.fees == sum((t.fees for t in trades), Decimal(0))
    assert sleeve.wins == sum(1 for t in trades if t.pnl > 0)
    assert sleeve.win_rate == pytest.approx(sleeve.wins / len(trades))
    before = [m for m in marks if m.at < start]
    during = [m for m in marks if start <= m.at < start + timedelta(days=1)]
    assert sleeve.equity_end == (during or before)[-1].equity
    assert sleeve.equity_start == (before or during)[0 if not before else -1].equity
    assert summary.portfolio.sleeve == PORTFOLIO


def test_a_quiet_day_has_no_trades_and_no_win_rate(state: Settings) -> None:
    with StateStore.read_only(state.state_url) as store:
        summary = daily_summary(store, date(2001, 1, 1))
    assert summary.portfolio.trades == 0 and summary.portfolio.win_rate is None
    assert summary.portfolio.realised_pnl == 0 and summary.portfolio.equity_end is None
    assert "win rate -" in summary_text(summary)


def test_the_summary_is_stored_as_json_markdown_and_png(state: Settings) -> None:
    day = busiest_day(state)
    with StateStore.read_only(state.state_url) as store:
        summary = daily_summary(store, day)
    stored = write_summary(summary, state.data_dir)
    assert stored.folder == state.data_dir / "reports" / day.isoformat()
    document = json.loads(stored.json_path.read_text())
    assert document["sleeves"][0]["trades"] == summary.sleeves[0].trades
    assert Decimal(document["portfolio"]["realised_pnl"]) == summary.portfolio.realised_pnl
    assert stored.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(stored.chart) > 5000
    assert "main:BTC/USDT" in stored.markdown_path.read_text()


def test_day_parsing() -> None:
    assert parse_day(None, datetime(2026, 3, 1, 0, 5, tzinfo=UTC)) == date(2026, 2, 28)
    assert parse_day("2026-01-02", datetime(2026, 3, 1, tzinfo=UTC)) == date(2026, 1, 2)
    with pytest.raises(ValueError, match="'yesterday' is not a date of the form YYYY-MM-DD"):
        parse_day("yesterday", datetime(2026, 3, 1, tzinfo=UTC))


def test_sender_delivers_message_and_photo_to_the_allowed_chats_only() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    with PhotoTelegram() as server:
        sender = TelegramSender(TOKEN, [11, -22], server.url, backoff_s=0.0)
        assert sender.send_message("hello") == {11: True, -22: True}
        assert sender.send_photo(png, caption="equity") == {11: True, -22: True}
        assert sorted(server.texts_to(11) + server.texts_to(-22)) == ["hello", "hello"]
        assert {m.chat_id for m in server.sent} == {11, -22}
        assert [(chat, image, caption) for chat, image, caption in server.photos] == [
            (11, png, "equity"), (-22, png, "equity")]
        assert all(r.token == TOKEN for r in server.requests)


def test_sender_without_token_sends_nothing() -> None:
    sender = TelegramSender(None, [11])
    assert not sender.enabled
    assert sender.send_message("x") == {}
    assert "REDACTED" not in repr(TelegramSender(TOKEN, [1]))
    assert TOKEN not in repr(TelegramSender(TOKEN, [1]))
