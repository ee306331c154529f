"""ccxt.pro exchanges for websocket candles, configured like the REST ones (``build_ws_exchange``).

The websocket exchange reads public candles only: it is built without API keys, with the same timeout and REST
base as ``ccxt_source.build_exchange`` (ccxt.pro asks REST for what a stream does not carry), and
``ccxt_ws_url`` points its public websocket at another base (a proxy or a local test server).
"""

from __future__ import annotations

from typing import Any

from pipeline.data.sources.ccxt_source import configured_exchange
from pipeline.domain import DataError
from pipeline.settings import Settings


def build_ws_exchange(settings: Settings, exchange_id: str) -> Any | None:
    """A ccxt.pro exchange for ``exchange_id`` that serves candles over its websocket (``watchOHLCV``), or None
    when ccxt.pro has no such exchange or it streams no candles."""
    import ccxt.pro

    cls = getattr(ccxt.pro, exchange_id, None) if exchange_id in ccxt.pro.exchanges else None
    if not isinstance(cls, type):
        return None
    public = settings.model_copy(update={"ccxt_api_key": None, "ccxt_api_secret": None})
    exchange = configured_exchange(cls, public)
    if not exchange.has.get("watchOHLCV"):
        return None
    if settings.ccxt_ws_url:
        point_ws_at(exchange, settings.ccxt_ws_url)
    return exchange


def point_ws_at(exchange: Any, base: str) -> None:
    """Send the exchange's public spot websocket to ``base`` (``ws://`` or ``wss://``)."""
    if not base.startswith(("ws://", "wss://")):
        raise DataError(f"ccxt websocket URL {base!r} is not valid: use a ws:// or wss:// URL")
    api = exchange.urls.get("api")
    ws = api.get("ws") if isinstance(api, dict) else None
    if isinstance(ws, str):
        api["ws"] = base
    elif isinstance(ws, dict) and isinstance(ws.get("spot"), str):
        ws["spot"] = base
    elif isinstance(ws, dict) and isinstance(ws.get("public"), str):
        ws["public"] = base
    else:
        raise DataError(f"exchange {exchange.id!r} has no public websocket URL that can be pointed at {base!r}")
