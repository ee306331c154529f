"""A local stand-in for Alpaca's market-data API v2 (historical stock bars), on 127.0.0.1.

It answers ``GET /v2/stocks/bars`` the way Alpaca does, closely enough for the real alpaca-py client:
``symbols``, ``timeframe`` (``1Min``, ``1Hour``, ``1Day``...), ``start``, ``end``, ``limit``, ``page_token``,
``feed``, ``adjustment`` and ``sort``; the answer is ``{"bars": {SYMBOL: [...]}, "next_page_token": ...}``,
paginated by ``limit`` and by the server's own ``page_size`` (Alpaca also returns fewer bars than asked for).
Symbols the server holds no bars for get ``{"bars": {}}``, as at Alpaca; malformed ones get a 400.

Bars are served from canonical bar frames whose ``timestamp`` is the stamp Alpaca would give the bar (use
``alpaca_daily_stamps`` for daily bars: Alpaca stamps them at midnight New York time). Every request is
recorded; ``fail_next`` and ``delay_next`` inject rate limits, server errors and slow answers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pandas as pd

MAX_LIMIT = 10_000
NEW_YORK = "America/New_York"
_SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-/")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (query parameters flattened to their last value)."""

    method: str
    path: str
    params: dict[str, str]
    had_key_headers: bool


@dataclass(frozen=True)
class _Fault:
    status: int | None
    delay_s: float


def alpaca_daily_stamps(frame: pd.DataFrame) -> pd.DataFrame:
    """A daily bar frame labelled at 00:00 UTC, restamped the way Alpaca stamps it: midnight in New York."""
    dates = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    out = frame.copy()
    out["timestamp"] = dates.dt.tz_localize(NEW_YORK).dt.tz_convert("UTC")
    return out


class AlpacaServer:
    """Alpaca's historical stock-bars endpoint served from pandas frames; use as a context manager."""

    def __init__(self, page_size: int = MAX_LIMIT) -> None:
        self.page_size = page_size
        self.requests: list[RecordedRequest] = []
        self._bars: dict[tuple[str, str], pd.DataFrame] = {}
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-alpaca", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to give alpaca-py as ``url_override`` (the client adds ``/v2/...``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_bars(self, symbol: str, timeframe: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (timestamps as Alpaca stamps the bars) for ``symbol`` at Alpaca's ``timeframe``."""
        ordered = frame.sort_values("timestamp").reset_index(drop=True)
        ordered["timestamp"] = ordered["timestamp"].dt.tz_convert("UTC")
        with self._lock:
            self._bars[(symbol, timeframe)] = ordered

    def fail_next(self, status: int = 429, times: int = 1) -> None:
        """Answer the next ``times`` bar requests with HTTP ``status`` (e.g. 429, 500, 504)."""
        with self._lock:
            self._faults.extend(_Fault(status, 0.0) for _ in range(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` bar requests for ``seconds`` before answering them normally."""
        with self._lock:
            self._faults.extend(_Fault(None, seconds) for _ in range(times))

    def bar_requests(self) -> list[RecordedRequest]:
        """The recorded requests for stock bars, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == "/v2/stocks/bars"]

    # -- the HTTP side ---------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = server._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        has_keys = all(handler.headers.get(name) for name in ("APCA-API-KEY-ID", "APCA-API-SECRET-KEY"))
        with self._lock:
            self.requests.append(RecordedRequest("GET", parts.path, params, has_keys))
            fault = self._faults.popleft() if self._faults and parts.path == "/v2/stocks/bars" else None
        if not has_keys:
            return 401, {"message": "unauthorized."}
        if parts.path != "/v2/stocks/bars":
            return 404, {"message": "Not Found"}
        if fault is not None:
            time.sleep(fault.delay_s)
            if fault.status is not None:
                return fault.status, {"code": fault.status, "message": f"injected HTTP {fault.status}"}
        try:
            return 200, self._bars_page(params)
        except _BadRequest as exc:
            return exc.status, {"message": str(exc)}

    def _bars_page(self, params: dict[str, str]) -> dict[str, Any]:
        symbols = _symbols(params.get("symbols", ""))
        timeframe = params.get("timeframe", "")
        if not timeframe:
            raise _BadRequest(422, "invalid timeframe")
        start, end = _time_param(params, "start"), _time_param(params, "end")
        if start is not None and end is not None and start > end:
            raise _BadRequest(422, "end should not be before start")
        limit = _limit(params.get("limit"))
        if params.get("sort", "asc") not in ("asc", "desc"):
            raise _BadRequest(422, "invalid sort")
        rows = self._rows(symbols, timeframe, start, end, descending=params.get("sort") == "desc")
        offset = _offset(rows, params.get("page_token") or None)
        page = rows[offset : offset + min(limit, self.page_size)]
        following = offset + len(page)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        token = None
        if following < len(rows):
            next_symbol, next_bar = rows[following]
            token = _token(next_symbol, next_bar["t"])
        return {"bars": grouped, "next_page_token": token}

    def _rows(
        self,
        symbols: list[str],
        timeframe: str,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        descending: bool,
    ) -> list[tuple[str, dict[str, Any]]]:
        rows: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            frames = {s: self._bars.get((s, timeframe)) for s in sorted(symbols)}
        for symbol, frame in frames.items():
            if frame is None:
                continue
            mask = pd.Series(True, index=frame.index)
            if start is not None:
                mask &= frame["timestamp"] >= start
            if end is not None:
                mask &= frame["timestamp"] <= end
            selected = frame.loc[mask]
            if descending:
                selected = selected.iloc[::-1]
            rows.extend((symbol, _bar_json(bar)) for bar in selected.itertuples(index=False))
        return rows


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _symbols(text: str) -> list[str]:
    symbols = [s for s in text.split(",") if s]
    if not symbols:
        raise _BadRequest(400, "symbols is required")
    for symbol in symbols:
        if not set(symbol) <= _SYMBOL_CHARS or len(symbol) > 21:
            raise _BadRequest(400, f"invalid symbol: {symbol!r}")
    return symbols


def _time_param(params: dict[str, str], name: str) -> pd.Timestamp | None:
    text = params.get(name)
    if not text:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise _BadRequest(422, f"invalid {name}: {text!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return 1000
    try:
        value = int(text)
    except ValueError as exc:
        raise _BadRequest(422, f"invalid limit: {text!r}") from exc
    if not 1 <= value <= MAX_LIMIT:
        raise _BadRequest(422, f"invalid limit: {value} is not in 1..{MAX_LIMIT}")
    return value


def _token(symbol: str, stamp: str) -> str:
    return base64.b64encode(f"{symbol}|{stamp}".encode()).decode()


def _offset(rows: list[tuple[str, dict[str, Any]]], token: str | None) -> int:
    if token is None:
        return 0
    try:
        symbol, stamp = base64.b64decode(token.encode(), validate=True).decode().split("|")
    except ValueError as exc:
        raise _BadRequest(400, "invalid page_token") from exc
    for index, (row_symbol, bar) in enumerate(rows):
        if row_symbol == symbol and bar["t"] == stamp:
            return index
    raise _BadRequest(400, "invalid page_token")


def _bar_json(bar: Any) -> dict[str, Any]:
    stamp = pd.Timestamp(bar.timestamp).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    high, low, close = float(bar.high), float(bar.low), float(bar.close)
    return {
        "t": stamp,
        "o": float(bar.open),
        "h": high,
        "l": low,
        "c": close,
        "v": float(bar.volume),
        "n": 1 if float(bar.volume) > 0 else 0,
        "vw": round((high + low + close) / 3, 4),
    }
