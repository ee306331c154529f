"""The rules that keep real money safe, checked before a runtime is wired (pure: no I/O, no clients).

* a feed and a broker are chosen by name (or by default from the mode and the symbols' asset class);
* live mode needs ``TRADEFORGE_LIVE_CONFIRM=yes`` and sends orders to a venue, never to the paper broker;
* the ccxt broker trades real money, so it needs live mode; Alpaca in paper mode uses Alpaca's paper account
  (its paper endpoint), in live mode its live endpoint;
* a venue broker needs that venue's API key and secret;
* a replayed or sample (not real-time) feed may drive a venue broker only when the venue URL points somewhere
  other than the real venue (a local test venue): old or synthetic prices must never reach a real order book.

Each rule raises ``DataError`` with a message naming the option or setting to change.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pipeline.domain import DataError
from pipeline.settings import Settings
from runtime.config import BROKERS, FEEDS


@dataclass(frozen=True)
class Route:
    """Where a runtime's bars come from (``feed``) and where its orders go (``broker``)."""

    feed: str
    broker: str


@dataclass(frozen=True)
class VenueAccess:
    """What the settings grant: the live confirmation, which venue keys are set, which venue URLs are overridden."""

    live_confirm: str = ""
    ccxt_keys: bool = False
    alpaca_keys: bool = False
    ccxt_url_overridden: bool = False
    alpaca_url_overridden: bool = False

    @classmethod
    def of(cls, settings: Settings) -> VenueAccess:
        return cls(
            live_confirm=settings.live_confirm,
            ccxt_keys=settings.ccxt_api_key is not None and settings.ccxt_api_secret is not None,
            alpaca_keys=settings.alpaca_api_key is not None and settings.alpaca_api_secret is not None,
            ccxt_url_overridden=bool(settings.ccxt_rest_url),
            alpaca_url_overridden=bool(settings.alpaca_trading_url),
        )


def choose_route(mode: str, asset_classes: Collection[str], feed: str = "", broker: str = "") -> Route:
    """The feed and broker asked for, or the defaults: in paper mode replay and paper; in live mode the venue of
    the symbols (ccxt for crypto, alpaca for stocks; a mix must name both)."""
    kinds = set(asset_classes)
    venue_default = "ccxt" if kinds == {"crypto"} else "alpaca" if kinds == {"stock"} else ""
    feed = feed or ("replay" if mode == "paper" else venue_default)
    broker = broker or ("paper" if mode == "paper" else venue_default)
    if feed and feed not in FEEDS:
        raise DataError(f"--feed {feed!r} is not known: use {', '.join(FEEDS[:-1])} or {FEEDS[-1]}")
    if broker and broker not in BROKERS:
        raise DataError(f"--broker {broker!r} is not known: use {', '.join(BROKERS[:-1])} or {BROKERS[-1]}")
    if not feed or not broker:
        raise DataError("this portfolio mixes crypto and stocks: give --feed and --broker explicitly")
    return Route(feed, broker)


def check_live_confirmed(mode: str, access: VenueAccess) -> None:
    """Live mode needs the explicit confirmation setting."""
    if mode == "live" and access.live_confirm != "yes":
        raise DataError("live trading needs TRADEFORGE_LIVE_CONFIRM=yes (and the venue's keys)")


def check_mode_matches_broker(mode: str, route: Route) -> None:
    """Live mode sends orders to a venue; the ccxt broker (real orders only) needs live mode."""
    if mode == "live" and route.broker == "paper":
        raise DataError("--mode live sends orders to a venue: use --broker ccxt or alpaca (or --mode paper)")
    if mode != "live" and route.broker == "ccxt":
        raise DataError("the ccxt broker sends real orders: it needs --mode live and TRADEFORGE_LIVE_CONFIRM=yes")


def check_keys(route: Route, access: VenueAccess) -> None:
    """A venue broker needs that venue's API key and secret."""
    if route.broker == "ccxt" and not access.ccxt_keys:
        raise DataError("the ccxt broker needs TRADEFORGE_CCXT_API_KEY and TRADEFORGE_CCXT_API_SECRET")
    if route.broker == "alpaca" and not access.alpaca_keys:
        raise DataError("the alpaca broker needs TRADEFORGE_ALPACA_API_KEY and TRADEFORGE_ALPACA_API_SECRET")


def check_prices_are_live(route: Route, access: VenueAccess) -> None:
    """A replay or sample feed drives a venue broker only when that venue's URL points at a test venue."""
    if route.feed in ("replay", "sample") and route.broker != "paper":
        overridden = access.ccxt_url_overridden if route.broker == "ccxt" else access.alpaca_url_overridden
        if not overridden:
            raise DataError(f"a {route.feed} feed cannot drive the real {route.broker} venue (its prices must never "
                            "reach a real order book); use a live feed, or point the venue URL at a test venue")


def check_route(mode: str, route: Route, access: VenueAccess) -> None:
    """Every rule, in the order an operator meets them; the first one broken refuses the start."""
    check_live_confirmed(mode, access)
    check_mode_matches_broker(mode, route)
    check_keys(route, access)
    check_prices_are_live(route, access)


def safe_route(mode: str, asset_classes: Collection[str], feed: str, broker: str, access: VenueAccess) -> Route:
    """The route of a runtime start, once every rule passes."""
    route = choose_route(mode, asset_classes, feed, broker)
    check_route(mode, route, access)
    return route
