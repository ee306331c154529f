"""The shared order submission through each venue broker's own calls: every order is looked up and sent once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runtime.brokers.submission import OrderRequest, Submission
from tests.contract.broker_venues import VENUES


@pytest.mark.parametrize("kind", ["ccxt", "alpaca"])
def test_every_venue_broker_submits_an_order_once(kind: str, tmp_path: Path) -> None:
    """The shared submission, through each venue broker's own calls: an order is looked up by its client id before
    it is sent and before any resend, a refusal is final, and an exact quantity reaches the venue exactly."""
    attempts = 3  # the brokers of broker_venues: max_retries=2
    with VENUES[kind](tmp_path) as venue:
        venue.set_price(Decimal(30_000) if kind == "ccxt" else Decimal(100))
        orders: Submission[Any] = venue.broker().orders  # type: ignore[attr-defined]
        qty = Decimal("0.01234") if kind == "ccxt" else Decimal("1.234567891")

        def submit(client_id: str) -> Any:
            return orders.submit(OrderRequest(client_id, venue.symbol, "buy", qty))

        def posts(client_id: str) -> int:
            return venue.posted().count(client_id)

        clean = submit("tf-clean")
        assert (clean.outcome, posts("tf-clean"), venue.quantity("tf-clean")) == ("placed", 1, qty)

        again = submit("tf-clean")  # the same order again (a bar processed twice): found, never sent again
        assert again.outcome == "placed" and posts("tf-clean") == 1

        venue.lose_next_answer()  # placed, answer lost: the look-up finds it
        lost = submit("tf-lost")
        assert (lost.outcome, posts("tf-lost"), venue.client_ids().count("tf-lost")) == ("placed", 1, 1)

        venue.fail_placements()  # a 503: the look-up finds nothing, so it is sent again
        retried = submit("tf-retried")
        assert (retried.outcome, posts("tf-retried"), venue.client_ids().count("tf-retried")) == ("placed", 2, 1)

        venue.arm_reject()  # a refusal is final: not sent again
        refused = submit("tf-refused")
        assert (refused.outcome, posts("tf-refused")) == ("rejected", 1)
        assert "tf-refused" not in venue.client_ids() and refused.reason

        venue.fail_look_ups(attempts)  # the venue cannot be asked before sending: nothing is sent
        unknown = submit("tf-unknown")
        assert (unknown.outcome, unknown.order, posts("tf-unknown")) == ("unknown", None, 0)
        assert orders.find("tf-unknown", venue.symbol) is None  # it never reached the venue

        assert orders.find("tf-clean", venue.symbol) is not None
        assert len(venue.client_ids()) == len(set(venue.client_ids())) == 3


@pytest.mark.parametrize(("fields", "problem"), [
    ({"kind": "limit"}, "a limit order needs a positive price"),
    ({"kind": "limit", "price": Decimal(0)}, "a limit order needs a positive price"),
    ({"kind": "stop"}, "a stop order needs a positive stop_price"),
    ({"kind": "stop", "stop_price": Decimal(-1)}, "a stop order needs a positive stop_price"),
    ({"kind": "stop", "stop_price": Decimal(1), "price": Decimal(1)}, "a stop order takes no price"),
    ({"stop_price": Decimal(1)}, "a market order takes no stop_price"),
    ({"kind": "trailing"}, "kind 'trailing' is not one of market, limit, stop"),
    ({"tif": "ioc"}, "time in force 'ioc' is not gtc or day"),
])
def test_an_order_request_says_what_is_wrong_with_it(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=f"order t-1: {problem}"):
        OrderRequest("t-1", "BTC/USDT", "buy", Decimal(1), **fields)


def test_an_order_request_takes_a_limit_or_a_stop_price() -> None:
    limit = OrderRequest("t-1", "BTC/USDT", "buy", Decimal(1), Decimal("29000.5"), "limit")
    stop = OrderRequest("t-2", "BTC/USDT", "sell", Decimal(1), kind="stop", stop_price=Decimal(28_000),
                        tif="day")
    assert (limit.kind, limit.price, limit.tif) == ("limit", Decimal("29000.5"), "gtc")
    assert (stop.kind, stop.stop_price, stop.tif) == ("stop", Decimal(28_000), "day")
