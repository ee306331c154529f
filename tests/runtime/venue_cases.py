"""The two venues the order-type tests run on, behind one small interface: a fake Binance through the real ccxt
client and a fake Alpaca through alpaca-py, each with its broker, its prices and a normalised view of its orders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import pytest

from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.engine import Engine, EngineConfig
from pipeline.settings import Settings
from runtime.brokers.alpaca import AlpacaBroker, make_trading_client
from runtime.brokers.ccxt import CcxtBroker
from runtime.brokers.routing import VenueRouting
from tests.fakes.alpaca_server import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, AlpacaServer
from tests.fakes.binance_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance

SLEEVE = "main:orders"
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
MINUTE = 60_000
NEXT_DAY = 1_700_006_400_000  # the first millisecond of the next trading day (day boundary 00:00 UTC)

TYPES = {"MARKET": "market", "LIMIT": "limit", "STOP_LOSS": "stop"}


@dataclass(frozen=True)
class Seen:
    """A venue order, as the tests compare it on either venue."""

    client_id: str
    status: str
    kind: str
    qty: Decimal
    filled: Decimal
    stop: Decimal | None


class Venue(Protocol):
    name: str
    symbol: str
    base: float
    """The price the tests move around (``at(1.0)``)."""
    cash: int
    fee_bps: int

    def broker(self) -> VenueRouting: ...
    def set_price(self, price: float) -> None: ...
    def partial_next(self, fraction: str) -> None: ...
    def orders(self) -> list[Seen]: ...
    def held(self) -> Decimal: ...


class Binance:
    name, symbol, base, cash, fee_bps = "ccxt", "BTC/USDT", 30_000.0, 100_000, 10

    def __init__(self, tmp_path: Path, server: FakeBinance) -> None:
        self.server = server
        self.settings = Settings(data_dir=tmp_path, ccxt_api_key=DEFAULT_API_KEY, ccxt_api_secret=DEFAULT_API_SECRET,
                                 ccxt_rest_url=server.url, _env_file=None)  # type: ignore[call-arg]

    def broker(self) -> CcxtBroker:
        return CcxtBroker(build_exchange(self.settings, "binance"), max_retries=2, backoff_s=0.0,
                          sleep=lambda _s: None)

    def set_price(self, price: float) -> None:
        self.server.set_price(self.symbol, Decimal(repr(price)))

    def partial_next(self, fraction: str) -> None:
        self.server.partial_fill_resting_next(fraction)

    def orders(self) -> list[Seen]:
        return [Seen(o.client_order_id, o.status.lower(), TYPES[o.type], o.quantity, o.executed_qty,
                     o.stop_price or None) for o in self.server.orders]

    def held(self) -> Decimal:
        return self.server.balances()["BTC"].total


class Alpaca:
    name, symbol, base, cash, fee_bps = "alpaca", "AAPL", 500.0, 50_000, 0

    def __init__(self, tmp_path: Path, server: AlpacaServer) -> None:
        self.server = server
        self.settings = Settings(data_dir=tmp_path, alpaca_api_key=DEFAULT_KEY_ID,  # type: ignore[call-arg]
                                 alpaca_api_secret=DEFAULT_SECRET_KEY, alpaca_trading_url=server.url,
                                 http_timeout_s=10.0, _env_file=None)

    def broker(self) -> AlpacaBroker:
        return AlpacaBroker(make_trading_client(self.settings), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)

    def set_price(self, price: float) -> None:
        self.server.set_price(self.symbol, Decimal(repr(price)))

    def partial_next(self, fraction: str) -> None:
        self.server.partial_fill_resting_next(fraction)

    def orders(self) -> list[Seen]:
        return [Seen(o.client_order_id, o.status, o.type, o.qty, o.filled_qty, o.stop_price)
                for o in self.server.orders]

    def held(self) -> Decimal:
        return self.server.positions.get(self.symbol, Decimal(0))


@pytest.fixture(params=["ccxt", "alpaca"])
def venue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Venue]:
    """Each venue in turn, fresh, its price at ``base``."""
    if request.param == "ccxt":
        with FakeBinance(balances={"USDT": Decimal(Binance.cash)}) as binance:
            case: Venue = Binance(tmp_path, binance)
            case.set_price(case.base)
            yield case
    else:
        with AlpacaServer(cash=Alpaca.cash) as alpaca:
            case = Alpaca(tmp_path, alpaca)
            case.set_price(case.base)
            yield case


def engine_for(venue: Venue, reasons: tuple[str, ...] = ("enter", "again", "leave"), **config: object) -> Engine:
    """An external-fills engine sized for ``venue`` (its cash and fee), half of equity at most."""
    settings = {"cash": venue.cash, "fee_bps": venue.fee_bps, "max_position": 0.5, **config}
    return Engine(EngineConfig.model_validate(settings), reasons, external=True)


def at(venue: Venue, fraction: float) -> float:
    """A price ``fraction`` of the venue's base price, on a cent."""
    return round(venue.base * fraction, 2)


def bar(engine: Engine, venue: Venue, ms: int, fraction: float, aim: float, reason: int, *,
        high: float | None = None, order: object = None) -> None:
    """Step ``engine`` through one flat bar at ``at(fraction)`` (its high ``at(high)`` when given)."""
    price = at(venue, fraction)
    top = price if high is None else at(venue, high)
    engine.step(ms, price, top, price, price, aim, reason, order=order)  # type: ignore[arg-type]
