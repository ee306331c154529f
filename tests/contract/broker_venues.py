"""The venues the broker contract runs on: paper, ccxt (a fake Binance), Alpaca (a fake Alpaca), and their faults."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.settings import Settings
from runtime.brokers import PaperBroker, client_order_id
from runtime.brokers.alpaca import AlpacaBroker, make_trading_client
from runtime.brokers.base import Broker
from runtime.brokers.ccxt import CcxtBroker
from tests.fakes.alpaca_server import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, AlpacaServer
from tests.fakes.binance_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance

CASH = 50_000


class PaperVenue:
    """No venue: the engine's own fill model. Venue faults do not apply; there are no holdings to read."""

    name = "paper"
    symbol = "AAPL"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def __enter__(self) -> PaperVenue:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def broker(self) -> Broker:
        return PaperBroker()

    def expected_id(self, sleeve: str, bar_ms: int, number: int) -> str:
        return f"{sleeve}-{bar_ms}-{number}"

    def set_price(self, price: Decimal) -> None:
        return None

    def arm_partial(self) -> None:
        return None

    def arm_reject(self) -> None:
        return None

    def client_ids(self) -> list[str]:
        return []

    def posted(self) -> list[str]:
        """The client id of every order placement the venue received (placed or refused)."""
        return []

    def held(self) -> Decimal | None:
        return None

    def filled(self) -> dict[str, Decimal]:
        return {}

    def fail_placements(self) -> None:
        """The next order placement is answered with a 503 (nothing placed)."""

    def lose_next_answer(self) -> None:
        """The next order is placed, but its answer is lost."""

    def fail_look_ups(self, times: int) -> None:
        """The next ``times`` order look-ups are answered with a 503."""

    def quantity(self, client_id: str) -> Decimal:
        """The quantity of the venue's order ``client_id``."""
        raise NotImplementedError


class BinanceVenue(PaperVenue):
    name = "ccxt"
    symbol = "BTC/USDT"  # the fake Binance lists it; the bars are the same AAPL closes as everywhere

    def __enter__(self) -> BinanceVenue:
        self.fake = FakeBinance(balances={"USDT": Decimal(CASH)}).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()

    def broker(self) -> Broker:
        settings = Settings(data_dir=self.tmp_path, ccxt_api_key=DEFAULT_API_KEY, ccxt_api_secret=DEFAULT_API_SECRET,
                            ccxt_rest_url=self.fake.url, http_timeout_s=2.0, _env_file=None)  # type: ignore[call-arg]
        return CcxtBroker(build_exchange(settings, "binance"), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)

    def expected_id(self, sleeve: str, bar_ms: int, number: int) -> str:
        return client_order_id(sleeve, bar_ms, number)

    def set_price(self, price: Decimal) -> None:
        self.fake.set_price(self.symbol, price)

    def arm_partial(self) -> None:
        self.fake.partial_fill_next("0.5")

    def arm_reject(self) -> None:
        self.fake.reject_next(-2010, "Account has insufficient balance for requested action.")

    def client_ids(self) -> list[str]:
        return [order.client_order_id for order in self.fake.orders]

    def posted(self) -> list[str]:
        return [r.params["newClientOrderId"] for r in self.fake.requests_to("order", "POST")]

    def held(self) -> Decimal | None:
        return self.fake.balances()["BTC"].total

    def filled(self) -> dict[str, Decimal]:
        return {order.client_order_id: order.executed_qty for order in self.fake.orders}

    def fail_placements(self) -> None:
        self.fake.fail_next(503, endpoint="order", method="POST")

    def lose_next_answer(self) -> None:
        self.fake.lose_response_next()

    def fail_look_ups(self, times: int) -> None:
        self.fake.fail_next(503, endpoint="order", method="GET", times=times)

    def quantity(self, client_id: str) -> Decimal:
        return next(o.quantity for o in self.fake.orders if o.client_order_id == client_id)


class AlpacaVenue(BinanceVenue):
    name = "alpaca"
    symbol = "AAPL"

    def __enter__(self) -> AlpacaVenue:
        self.server = AlpacaServer(cash=CASH).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def broker(self) -> Broker:
        settings = Settings(data_dir=self.tmp_path, alpaca_api_key=DEFAULT_KEY_ID,  # type: ignore[call-arg]
                            alpaca_api_secret=DEFAULT_SECRET_KEY, alpaca_trading_url=self.server.url,
                            http_timeout_s=2.0, _env_file=None)
        return AlpacaBroker(make_trading_client(settings), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)

    def set_price(self, price: Decimal) -> None:
        self.server.set_price(self.symbol, price)

    def arm_partial(self) -> None:
        self.server.partial_fill_next("0.5")

    def arm_reject(self) -> None:
        self.server.reject_next(403, "insufficient buying power")

    def client_ids(self) -> list[str]:
        return [order.client_order_id for order in self.server.orders]

    def posted(self) -> list[str]:
        return [r.body["client_order_id"] for r in self.server.requests_to("orders", "POST")]

    def held(self) -> Decimal | None:
        return self.server.positions.get(self.symbol, Decimal(0))

    def filled(self) -> dict[str, Decimal]:
        return {order.client_order_id: order.filled_qty for order in self.server.orders}

    def fail_placements(self) -> None:
        self.server.fail_next(503, endpoint="orders", method="POST")

    def lose_next_answer(self) -> None:
        self.server.lose_response_next()

    def fail_look_ups(self, times: int) -> None:
        self.server.fail_next(503, endpoint="orders", method="GET", times=times)

    def quantity(self, client_id: str) -> Decimal:
        return next(o.qty for o in self.server.orders if o.client_order_id == client_id)


VENUES: dict[str, Callable[[Path], PaperVenue]] = {"paper": PaperVenue, "ccxt": BinanceVenue, "alpaca": AlpacaVenue}
