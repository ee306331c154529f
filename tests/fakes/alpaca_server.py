"""A local stand-in for Alpaca's API v2 on 127.0.0.1: historical stock bars and the trading API.

It serves what alpaca-py's ``StockHistoricalDataClient`` and ``TradingClient`` call, the parts in their own
modules: ``GET /v2/stocks/bars`` from pandas frames (``alpaca_bars``), the account, orders and positions over a
ledger (``alpaca_trading``, its records in ``alpaca_records``), and the HTTP side with its scripted faults
(``alpaca_http``).

Trading requests need ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY`` (``401`` when missing, ``403`` when
they are not the server's ``api_key`` / ``api_secret``); bar requests need the headers present.

Trouble is scripted per endpoint (``bars``, ``account``, ``orders``, ``positions`` or ``*``, optionally per
method): ``fail_next`` (an HTTP status with Alpaca's error body, e.g. 429 or 5xx, the request unhandled),
``delay_next`` (a slow answer, the request handled: a client that times out cannot know an order was placed),
``lose_response_next`` (the order is placed, then the connection closes without an answer), ``reject_next``
(``403`` / ``422`` with Alpaca's body, nothing placed), ``partial_fill_next`` (the next market order fills in
part and stays ``partially_filled`` until the next ``set_price`` of its symbol), ``partial_fill_resting_next``
(the same for the next limit or stop order a ``set_price`` reaches). The market moves with ``set_price`` (which
fills limits and triggers stops), the session ends with ``expire_day_orders`` and ``transfer`` deposits or
withdraws cash. Every request is recorded; ``orders``, ``executions``, ``positions`` and ``cash`` read the ledger
back.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from tests.fakes.alpaca_bars import MAX_LIMIT, BadRequest, BarStore, alpaca_daily_stamps
from tests.fakes.alpaca_http import Fault, Handler, RecordedRequest, Reply, endpoint_of
from tests.fakes.alpaca_records import Execution, Refused, VenueOrder
from tests.fakes.alpaca_trading import TradingLedger
from tests.fakes.local_http import LocalHttpServer

__all__ = ["DEFAULT_KEY_ID", "DEFAULT_SECRET_KEY", "AlpacaServer", "alpaca_daily_stamps"]

DEFAULT_KEY_ID = "fake-alpaca-key-id"
DEFAULT_SECRET_KEY = "fake-alpaca-secret-key"
DEFAULT_CASH = Decimal(100_000)
_BAD_JSON = object()


class AlpacaServer(LocalHttpServer):
    """Alpaca's stock-bars endpoint served from pandas frames, and its trading API against a ledger.

    Use as a context manager; point alpaca-py clients at ``url`` (``url_override``) with ``api_key`` and
    ``api_secret``. ``page_size`` caps the bars of one answer (a test may change it).
    """

    thread_name = "fake-alpaca"

    def __init__(self, page_size: int = MAX_LIMIT, *, cash: Decimal | int | str = DEFAULT_CASH) -> None:
        self.page_size = page_size
        self.api_key = DEFAULT_KEY_ID
        self.api_secret = DEFAULT_SECRET_KEY
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.RLock()
        self._bars = BarStore()
        self._ledger = TradingLedger(Decimal(cash), self.api_key)
        self._listen(Handler)

    def close(self) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------------------------

    def add_bars(self, symbol: str, timeframe: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (timestamps as Alpaca stamps the bars) for ``symbol`` at Alpaca's ``timeframe``."""
        self._bars.add(symbol, timeframe, frame)

    def fail_next(self, status: int = 429, times: int = 1, *, endpoint: str = "bars", method: str | None = None
                  ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (``bars``, ``account``, ``orders``, ``positions``
        or ``*``; of ``method`` when given) with HTTP ``status`` (e.g. 429, 500, 504), leaving them unhandled."""
        self._queue(Fault(endpoint, _upper(method), status), times)

    def delay_next(self, seconds: float, times: int = 1, *, endpoint: str = "bars", method: str | None = None) -> None:
        """Hold the next ``times`` answers of ``endpoint`` for ``seconds``; the requests are handled (an order
        is placed even when the client gave up waiting)."""
        self._queue(Fault(endpoint, _upper(method), delay_s=seconds), times)

    def lose_response_next(self) -> None:
        """Handle the next order placement (the order IS placed), then close the connection unanswered."""
        self._queue(Fault("orders", "POST", lose_response=True), 1)

    def reject_next(self, status: int = 403, message: str = "insufficient buying power") -> None:
        """Refuse the next order placement with ``status`` (403 or 422) and Alpaca's body; nothing is placed."""
        code = 40310000 if status == 403 else 40010001
        self._queue(Fault("orders", "POST", status, body={"code": code, "message": message}), 1)

    def partial_fill_next(self, fraction: Decimal | float | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1, rounded down to 9 decimals) of the next market order.

        It stays ``partially_filled`` until the next ``set_price`` of its symbol fills the rest at the current
        price, or it is cancelled. Queued calls apply to successive market orders.
        """
        value = Decimal(str(fraction))
        if not 0 < value < 1:
            raise ValueError(f"a partial fill fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            self._ledger.queue_partial(value)

    def partial_fill_resting_next(self, fraction: Decimal | float | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1, rounded down to 9 decimals) of the next resting order a
        ``set_price`` reaches: a limit order, or a stop that triggers.

        It stays ``partially_filled``: a limit's rest fills when a later ``set_price`` reaches its limit again, a
        triggered stop's rest (a market order now) at the next ``set_price``; or it is cancelled.
        """
        value = Decimal(str(fraction))
        if not 0 < value < 1:
            raise ValueError(f"a partial fill fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            self._ledger.queue_partial(value, resting=True)

    def set_price(self, symbol: str, price: Decimal | float | str | int) -> None:
        """Set ``symbol``'s current price, then fill what it reaches, oldest order first: open market-order and
        triggered-stop remainders at ``price``, buy limits at or above it and sell limits at or below it at their
        limit, sell stops at or above it and buy stops at or below it (triggered) at ``price``."""
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"a price must be positive, not {price}")
        with self._lock:
            self._ledger.set_price(symbol, value)

    def expire_day_orders(self) -> None:
        """The session's end: every open order with ``time_in_force`` DAY becomes ``expired`` (what it filled
        stays filled)."""
        with self._lock:
            self._ledger.expire_day_orders()

    def transfer(self, amount: Decimal | int | str) -> None:
        """Move ``amount`` of cash into the account (negative: out of it), as a deposit or a withdrawal does."""
        with self._lock:
            self._ledger.transfer(Decimal(str(amount)))

    # -- introspection ---------------------------------------------------------------------------------------

    def bar_requests(self) -> list[RecordedRequest]:
        """The recorded requests for stock bars, in arrival order."""
        return self.requests_to("bars")

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests to ``endpoint`` (``bars``, ``account``, ``orders``, ``positions``), of ``method``
        when given, in arrival order."""
        with self._lock:
            return [r for r in self.requests
                    if r.endpoint == endpoint and (method is None or r.method == method.upper())]

    @property
    def pending_faults(self) -> int:
        """Faults queued and not yet met by a request."""
        with self._lock:
            return len(self._faults)

    @property
    def orders(self) -> list[VenueOrder]:
        """Every order placed so far (copies), oldest first, whatever its status."""
        with self._lock:
            return [order.copy() for order in self._ledger.orders]

    @property
    def executions(self) -> list[Execution]:
        """Every fill so far, oldest first."""
        with self._lock:
            return list(self._ledger.executions)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Units held per symbol (symbols with none left out)."""
        with self._lock:
            return {symbol: held.qty for symbol, held in self._ledger.holdings.items() if held.qty}

    @property
    def cash(self) -> Decimal:
        with self._lock:
            return self._ledger.cash

    # -- serving ---------------------------------------------------------------------------------------------

    def answer(self, method: str, target: str, raw: str, key: str | None, secret: str | None) -> Reply:
        """The reply to one request (``target``: its path and query; ``raw``: its body), recorded on arrival."""
        parts = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        has_keys = bool(key and secret)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _BAD_JSON
        endpoint = endpoint_of(parts.path)
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, params, has_keys, body))
        fault = self._take_fault(method, endpoint)
        if not has_keys:
            return Reply(401, {"code": 40110000, "message": "request is not authorized"})
        if endpoint != "bars" and (key, secret) != (self.api_key, self.api_secret):
            return Reply(403, {"message": "forbidden."})
        if fault is not None and fault.status is not None:
            return Reply.of_fault(fault, fault.status)
        if endpoint == "bars" and method == "GET":
            try:
                reply = Reply(200, self._bars.page(params, self.page_size))
            except BadRequest as exc:
                reply = Reply(exc.status, {"message": str(exc)})
        elif body is _BAD_JSON:
            reply = Reply(400, {"code": 40010000, "message": "request body format is invalid"})
        else:
            try:
                with self._lock:
                    reply = Reply(*self._ledger.answer(method, parts.path, params, body))
            except Refused as refused:
                reply = Reply(refused.status, {"code": refused.code, "message": refused.message})
        reply.delay_s = 0.0 if fault is None else fault.delay_s
        reply.lose_response = fault is not None and fault.lose_response
        return reply

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (cut short when the server stops)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _queue(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def _take_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, endpoint):
                    del self._faults[index]
                    return fault
        return None


def _upper(method: str | None) -> str | None:
    return None if method is None else method.upper()
