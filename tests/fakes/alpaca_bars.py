"""The fake Alpaca's market data: ``GET /v2/stocks/bars`` the way Alpaca answers it, closely enough for alpaca-py.

Parameters: ``symbols``, ``timeframe`` (``1Min``, ``1Hour``, ``1Day``...), ``start``, ``end``, ``limit`` and
``page_token`` (``feed`` and ``adjustment`` are recorded, not interpreted); the answer is
``{"bars": {SYMBOL: [...]}, "next_page_token": ...}``, oldest first, paginated by ``limit`` and by the server's
own ``page_size`` (Alpaca also returns fewer bars than asked for). Symbols the server holds no bars for get
``{"bars": {}}``, as at Alpaca; malformed ones get a 400. Bars are served from canonical bar frames whose
``timestamp`` is the stamp Alpaca would give the bar (use ``alpaca_daily_stamps`` for daily bars: Alpaca stamps
them at midnight New York time).
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import pandas as pd

MAX_LIMIT = 10_000
NEW_YORK = "America/New_York"
_SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-/")


class BadRequest(Exception):
    """A bars request Alpaca refuses with HTTP ``status`` and ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def alpaca_daily_stamps(frame: pd.DataFrame) -> pd.DataFrame:
    """A daily bar frame labelled at 00:00 UTC, restamped the way Alpaca stamps it: midnight in New York."""
    dates = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    out = frame.copy()
    out["timestamp"] = dates.dt.tz_localize(NEW_YORK).dt.tz_convert("UTC")
    return out


class BarStore:
    """The bar frames served per ``(symbol, timeframe)``, and the pages cut from them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str], pd.DataFrame] = {}

    def add(self, symbol: str, timeframe: str, frame: pd.DataFrame) -> None:
        ordered = frame.sort_values("timestamp").reset_index(drop=True)
        ordered["timestamp"] = ordered["timestamp"].dt.tz_convert("UTC")
        with self._lock:
            self._bars[(symbol, timeframe)] = ordered

    def page(self, params: dict[str, str], page_size: int) -> dict[str, Any]:
        """One answer of ``GET /v2/stocks/bars`` (``BadRequest`` for a malformed request)."""
        symbols = _symbols(params.get("symbols", ""))
        timeframe = params.get("timeframe", "")
        if not timeframe:
            raise BadRequest(422, "invalid timeframe")
        start, end = _time_param(params, "start"), _time_param(params, "end")
        if start is not None and end is not None and start > end:
            raise BadRequest(422, "end should not be before start")
        limit = _limit(params.get("limit"))
        rows = self._rows(symbols, timeframe, start, end)
        offset = _offset(rows, params.get("page_token") or None)
        page = rows[offset : offset + min(limit, page_size)]
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
        self, symbols: list[str], timeframe: str, start: pd.Timestamp | None, end: pd.Timestamp | None
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
            rows.extend((symbol, _bar_json(bar)) for bar in frame.loc[mask].itertuples(index=False))
        return rows


def _symbols(text: str) -> list[str]:
    symbols = [s for s in text.split(",") if s]
    if not symbols:
        raise BadRequest(400, "symbols is required")
    for symbol in symbols:
        if not set(symbol) <= _SYMBOL_CHARS or len(symbol) > 21:
            raise BadRequest(400, f"invalid symbol: {symbol!r}")
    return symbols


def _time_param(params: dict[str, str], name: str) -> pd.Timestamp | None:
    text = params.get(name)
    if not text:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise BadRequest(422, f"invalid {name}: {text!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return 1000
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(422, f"invalid limit: {text!r}") from exc
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(422, f"invalid limit: {value} is not in 1..{MAX_LIMIT}")
    return value


def _token(symbol: str, stamp: str) -> str:
    return base64.b64encode(f"{symbol}|{stamp}".encode()).decode()


def _offset(rows: list[tuple[str, dict[str, Any]]], token: str | None) -> int:
    if token is None:
        return 0
    try:
        symbol, stamp = base64.b64decode(token.encode(), validate=True).decode().split("|")
    except ValueError as exc:
        raise BadRequest(400, "invalid page_token") from exc
    for index, (row_symbol, bar) in enumerate(rows):
        if row_symbol == symbol and bar["t"] == stamp:
            return index
    raise BadRequest(400, "invalid page_token")


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
