"""A fake Binance spot REST API on 127.0.0.1, for driving the real ccxt client in tests.

It serves what ccxt's ``binance`` class calls on spot markets, the parts in their own modules:

* market data (``binance_market``) — ``exchangeInfo``, ``time`` and ``klines``, from bar frames handed to the
  server, with the venue's clock (``set_now``);
* the signed trading endpoints (``binance_trading``) — ``account``, ``order`` (place ``MARKET``, ``LIMIT`` GTC
  and ``STOP_LOSS`` stop-market orders, query, cancel), ``openOrders``, ``allOrders``, ``myTrades`` — over a ledger
  of the fake account (``binance_account``): balances, current prices, resting orders and the fills they book,
  with a commission charged in the quote asset (or, with ``commission_asset="received"``, in the asset each fill
  gives, as Binance charges it when the fee is not paid in BNB);
* the HTTP side (``binance_http``) — the API key and signature checks, Binance's error bodies and the scripted
  faults; the orders, trades and balances it keeps are written as Binance writes them (``binance_records``).

Tests script trouble with ``fail_next`` on any endpoint (HTTP errors with Binance's error bodies, slow answers
that outlast the client's timeout, a connection closed without an answer), ``reject_next`` (a Binance error
for the next order), ``partial_fill_next`` (the next market order fills in part and stays open),
``partial_fill_resting_next`` (so does the next resting limit or stop order a price reaches),
``lose_response_next`` (the order is placed, then the connection is closed without an answer) and ``before_next``
(something happens at the venue just before it answers the next request to an endpoint: while a client reads it,
say); they set the
venue's clock with ``set_now`` and read back every request the server received, the ``orders``, the ``trades``
and the ``balances()``.

Usage::

    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", frame)
        server.fail_next(status=429)
        ...  # point a client at server.url
        assert len(server.requests_to("klines")) == 2

    with FakeBinance(balances={"USDT": Decimal(10_000)}) as server:
        server.set_price("BTC/USDT", Decimal("30000"))
        ...  # a ccxt.binance client with apiKey=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET
        server.set_price("BTC/USDT", Decimal("29000"))  # fills buy limits at or above 29000, triggers sell stops
        assert server.balances()["BTC"].free == Decimal("0.01")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from decimal import Decimal

import pandas as pd

from tests.fakes.binance_account import CommissionAsset, Ledger
from tests.fakes.binance_http import Fault, Handler, RecordedRequest, Reply, authenticate
from tests.fakes.binance_market import DEFAULT_LISTINGS, MarketData
from tests.fakes.binance_records import Balance, Rejection, VenueOrder, VenueTrade, error_body
from tests.fakes.binance_trading import SignedEndpoints
from tests.fakes.local_http import LocalHttpServer

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Balance", "FakeBinance", "error_body"]

API_PREFIX = "/api/v3/"
DEFAULT_API_KEY = "fake-binance-api-key"
DEFAULT_API_SECRET = "fake-binance-api-secret"
DEFAULT_COMMISSION_RATE = Decimal("0.001")
"""0.1 % of each fill's quote amount, charged in the quote asset."""
DEFAULT_BALANCES: Mapping[str, Decimal] = {"USDT": Decimal(100_000)}
"""The starting free balances when none are given."""

SIGNED_ENDPOINTS = frozenset({"account", "order", "openOrders", "allOrders", "myTrades"})
"""The endpoints that need an API key and a signature."""
PUBLIC_ENDPOINTS = frozenset({"time", "exchangeInfo", "klines"})


class FakeBinance(LocalHttpServer):
    """The fake exchange: start it (or enter it as a context), feed it bars, point clients at ``url``.

    ``balances`` are the starting free balances (``DEFAULT_BALANCES`` when not given). Signed requests must carry
    ``api_key`` and be signed with ``api_secret`` (``DEFAULT_API_KEY`` / ``DEFAULT_API_SECRET``; a test may
    change them); ``DEFAULT_COMMISSION_RATE`` of each fill is charged: of its quote amount in the quote asset, or
    with ``commission_asset="received"`` of what it gives in the asset it gives (``binance_account``).
    """

    thread_name = "fake-binance"

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal | int | str] | None = None,
        commission_asset: CommissionAsset = "quote",
    ) -> None:
        self.api_key = DEFAULT_API_KEY
        self.api_secret = DEFAULT_API_SECRET
        self._lock = threading.RLock()
        self.market = MarketData(DEFAULT_LISTINGS, self._lock)
        self.ledger = Ledger(
            self.market,
            self._lock,
            DEFAULT_BALANCES if balances is None else balances,
            DEFAULT_COMMISSION_RATE,
            commission_asset,
        )
        self._signed = SignedEndpoints(self.ledger).handlers()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._listen(Handler)

    # --- scripting --------------------------------------------------------------------------------

    def serve_bars(self, symbol: str, interval: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (a bar frame: timestamp, open, high, low, close, volume) as ``symbol``'s klines."""
        self.market.serve_bars(symbol, interval, frame)

    def set_now(self, now: pd.Timestamp | None) -> None:
        """Set the venue's clock: bars opening after ``now`` are not served; the one containing it is open.

        ``None`` serves every bar handed to the server. Orders and trades are stamped with this clock too
        (the wall clock when it is not set); signed requests' timestamps are checked against the wall clock.
        """
        self.market.set_now(now)

    def fail_next(
        self,
        status: int = 0,
        *,
        delay_s: float = 0.0,
        body: str | None = None,
        times: int = 1,
        endpoint: str = "klines",
        method: str | None = None,
        drop: bool = False,
    ) -> None:
        """Queue trouble for the next ``times`` requests to ``endpoint`` (``klines``, ``order``, ... or ``*``).

        ``status`` answers with that HTTP status and Binance's body for it (or ``body``) without handling the
        request; ``delay_s`` holds the answer back that long first (longer than the client's timeout, the
        client sees a timeout; with no ``status`` the request is handled, so an order is placed);
        ``drop`` closes the connection without any answer, the request unhandled. ``method`` narrows the
        match (``"POST"`` for order placement, ``"GET"`` for order queries).
        """
        if status == 0 and delay_s <= 0 and not drop:
            raise ValueError("a fault needs a status, a delay, a drop or a combination")
        fault = Fault(endpoint, status, delay_s, body, None if method is None else method.upper(), drop)
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def reject_next(self, code: int, msg: str) -> None:
        """Refuse the next order placement with HTTP 400 and Binance's ``{"code", "msg"}`` body; nothing is placed.

        E.g. ``reject_next(-2010, "Market is closed.")``.
        """
        self.fail_next(400, body=error_body(code, msg), endpoint="order", method="POST")

    def lose_response_next(self) -> None:
        """Handle the next order placement — the order IS placed — then close the connection unanswered.

        The client sees a network error and cannot know whether its order reached the venue: it must look it up
        (by client order id) rather than send it again.
        """
        with self._lock:
            self._faults.append(Fault("order", method="POST", lose_response=True))

    def before_next(self, endpoint: str, action: Callable[[], object], *, method: str | None = None) -> None:
        """Run ``action`` when the next request to ``endpoint`` (of ``method`` when given) arrives, then answer it.

        Something that happens at the venue while a client is reading it: e.g. an order placed by hand (through a
        client of its own) between two of the reads a reconciliation makes. The action runs on the server's thread
        for that request, without the fake's lock held, so it may send requests to the fake itself.
        """
        with self._lock:
            self._faults.append(Fault(endpoint, method=None if method is None else method.upper(), action=action))

    def partial_fill_next(self, fraction: float | Decimal | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1) of the next market order at once, rounded down to its step.

        The order stays ``PARTIALLY_FILLED`` (``NEW`` if nothing was filled), its remainder's funds locked, until
        ``complete_partial`` or the next ``set_price`` of its symbol fills the rest at the current price, or it
        is cancelled. Queued calls apply to successive market orders. Funds are not checked again when the rest
        fills: a buy remainder filled at a higher price takes the difference from the free quote balance.
        """
        self.ledger.queue_partial(fraction)

    def partial_fill_resting_next(self, fraction: float | Decimal | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1) of the next resting order a ``set_price`` reaches (a limit, or
        a stop that triggers), rounded down to its step.

        The order stays ``PARTIALLY_FILLED``: a limit's rest fills at the next ``set_price`` that reaches its limit
        again, a triggered stop's rest (a market order now) at the next ``set_price``; or it is cancelled. Queued
        calls apply to successive resting fills.
        """
        self.ledger.queue_partial(fraction, resting=True)

    def set_price(self, symbol: str, price: Decimal | float | str | int) -> None:
        """Set ``symbol``'s current price and fill what it crosses, oldest order first.

        Resting buy limits at or above ``price`` and sell limits at or below it fill in full at their limit
        price (maker); sell stops at or above ``price`` and buy stops at or below it trigger and fill at ``price``
        (taker), as do open market-order and triggered-stop remainders.
        """
        self.ledger.set_price(symbol, price)

    def complete_partial(self, client_order_id: str) -> VenueOrder:
        """Fill the rest of an open order now: a market order at the current price, a limit one at its price.

        Returns the order as it is after.
        """
        return self.ledger.complete_partial(client_order_id)

    def set_balance(self, asset: str, free: Decimal | int | str) -> None:
        """Set ``asset``'s free balance (what open orders lock stays locked)."""
        self.ledger.set_balance(asset, free)

    def reset(self) -> None:
        """Forget faults, the clock, recorded requests, orders, trades and set prices; restore the balances.

        Served bars stay.
        """
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self.market.set_now(None)
            self.ledger.reset()

    # --- introspection ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        """The requests to ``endpoint`` (``klines``, ``order``, ...), of ``method`` when given."""
        return [
            request
            for request in self.requests
            if request.endpoint == endpoint and (method is None or request.method == method.upper())
        ]

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def orders(self) -> list[VenueOrder]:
        """Every order placed so far (copies), oldest first, whatever its status."""
        with self._lock:
            return [order.copy() for order in self.ledger.orders]

    @property
    def trades(self) -> list[VenueTrade]:
        """Every fill so far, oldest first."""
        with self._lock:
            return list(self.ledger.trades)

    def order(self, client_order_id: str) -> VenueOrder | None:
        """The latest order with client order id ``client_order_id``."""
        found = self.ledger.find(client_order_id)
        return None if found is None else found.copy()

    def balances(self) -> dict[str, Balance]:
        """Every asset the account holds or has held, and every listed asset, with its free and locked amounts."""
        return self.ledger.balances()

    def price(self, symbol: str) -> Decimal | None:
        """``symbol``'s current price: the last ``set_price``, else the close of the last bar served."""
        return self.ledger.current_price(self.market.market_id(symbol))

    # --- serving ----------------------------------------------------------------------------------

    def answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        *,
        raw_query: str = "",
        raw_body: str = "",
        api_key: str | None = None,
    ) -> Reply:
        """The reply to one request (faults applied), recorded on arrival.

        ``params`` are the query and form-body parameters together; ``raw_query`` and ``raw_body`` are the
        strings as sent (a signature is checked against them) and ``api_key`` the ``X-MBX-APIKEY`` header.
        """
        endpoint = path.removeprefix(API_PREFIX)
        fault = self._take_fault(method, endpoint)
        if fault is not None and fault.action is not None:
            fault.action()
        if fault is not None and fault.drop:
            reply = Reply(0, "", drop=True)
        elif fault is not None and fault.status:
            reply = Reply.of_fault(fault)
        else:
            reply = self._route(method, endpoint, params, raw_query, raw_body, api_key)
            reply.drop = fault is not None and fault.lose_response
        reply.delay_s = 0.0 if fault is None else fault.delay_s
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method, endpoint, dict(params), reply.status, reply.rows, reply.delay_s, api_key, reply.drop
                )
            )
        return reply

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (cut short when the server stops)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, endpoint):
                    return self._faults.pop(index)
        return None

    def _route(
        self, method: str, endpoint: str, params: dict[str, str], raw_query: str, raw_body: str, api_key: str | None
    ) -> Reply:
        if endpoint in PUBLIC_ENDPOINTS and method != "GET":
            return Reply(405, error_body(-1102, f"Method {method} is not served by the fake exchange."))
        try:
            if endpoint == "time":
                return Reply.json({"serverTime": self.market.server_time_ms()})
            if endpoint == "exchangeInfo":
                return Reply.json(self.market.exchange_info())
            if endpoint == "klines":
                return Reply.json(self.market.klines(params))
            handler = self._signed.get((method, endpoint))
            if handler is None:
                if endpoint in SIGNED_ENDPOINTS:
                    return Reply(405, error_body(-1102, f"Method {method} is not served by the fake exchange."))
                return Reply(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")
            authenticate(params, raw_query, raw_body, api_key, key=self.api_key, secret=self.api_secret)
            with self._lock:
                return Reply.json(handler(params))
        except Rejection as rejection:
            return Reply.rejection(rejection)
