"""The real-money safety rules of ``runtime.safety``: each one refuses with a message naming the option or setting
to change, and passes once that input is right."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from pipeline.domain import DataError
from pipeline.settings import Settings
from runtime.safety import (
    Route,
    VenueAccess,
    check_keys,
    check_live_confirmed,
    check_mode_matches_broker,
    check_prices_are_live,
    choose_route,
    safe_route,
)

LIVE_CCXT = VenueAccess(live_confirm="yes", ccxt_keys=True)


def test_paper_mode_defaults_to_a_replay_on_the_paper_broker() -> None:
    assert choose_route("paper", {"crypto"}) == Route("replay", "paper")
    assert choose_route("paper", {"crypto", "stock"}) == Route("replay", "paper")


def test_live_mode_defaults_to_the_venue_of_the_symbols() -> None:
    assert choose_route("live", {"crypto"}) == Route("ccxt", "ccxt")
    assert choose_route("live", {"stock"}) == Route("alpaca", "alpaca")
    assert choose_route("live", {"stock", "crypto"}, feed="alpaca", broker="alpaca") == Route("alpaca", "alpaca")


@pytest.mark.parametrize(("feed", "broker", "named"), [
    ("kraken", "", "--feed 'kraken'"),
    ("", "ib", "--broker 'ib'"),
])
def test_an_unknown_feed_or_broker_is_refused_by_name(feed: str, broker: str, named: str) -> None:
    with pytest.raises(DataError, match=named):
        choose_route("paper", {"crypto"}, feed, broker)


def test_a_mixed_portfolio_in_live_mode_must_name_its_feed_and_broker() -> None:
    with pytest.raises(DataError, match="give --feed and --broker"):
        choose_route("live", {"crypto", "stock"})
    with pytest.raises(DataError, match="give --feed and --broker"):
        choose_route("live", {"crypto", "stock"}, feed="ccxt")


def test_live_mode_needs_the_confirmation_setting() -> None:
    for confirm in ("", "no", "YES ", "true"):
        with pytest.raises(DataError, match="TRADEFORGE_LIVE_CONFIRM=yes"):
            check_live_confirmed("live", VenueAccess(live_confirm=confirm))
    check_live_confirmed("live", VenueAccess(live_confirm="yes"))
    check_live_confirmed("paper", VenueAccess())  # paper mode needs no confirmation


def test_live_mode_never_trades_on_the_paper_broker() -> None:
    with pytest.raises(DataError, match="--mode live sends orders to a venue: use --broker ccxt or alpaca"):
        check_mode_matches_broker("live", Route("ccxt", "paper"))
    check_mode_matches_broker("live", Route("ccxt", "ccxt"))
    check_mode_matches_broker("live", Route("alpaca", "alpaca"))


def test_the_ccxt_broker_needs_live_mode_and_alpaca_has_a_paper_account() -> None:
    with pytest.raises(DataError, match="the ccxt broker sends real orders: it needs --mode live"):
        check_mode_matches_broker("paper", Route("ccxt", "ccxt"))
    check_mode_matches_broker("paper", Route("alpaca", "alpaca"))  # Alpaca's paper endpoint
    check_mode_matches_broker("paper", Route("replay", "paper"))


@pytest.mark.parametrize(("broker", "missing", "named"), [
    ("ccxt", VenueAccess(alpaca_keys=True), "TRADEFORGE_CCXT_API_KEY and TRADEFORGE_CCXT_API_SECRET"),
    ("alpaca", VenueAccess(ccxt_keys=True), "TRADEFORGE_ALPACA_API_KEY and TRADEFORGE_ALPACA_API_SECRET"),
])
def test_a_venue_broker_needs_that_venues_keys(broker: str, missing: VenueAccess, named: str) -> None:
    with pytest.raises(DataError, match=named):
        check_keys(Route(broker, broker), missing)
    check_keys(Route(broker, broker), VenueAccess(ccxt_keys=True, alpaca_keys=True))
    check_keys(Route("replay", "paper"), VenueAccess())  # the paper broker needs no key


@pytest.mark.parametrize("feed", ["replay", "sample"])
@pytest.mark.parametrize("broker", ["ccxt", "alpaca"])
def test_old_or_synthetic_prices_never_reach_a_real_venue(feed: str, broker: str) -> None:
    with pytest.raises(DataError, match=f"a {feed} feed cannot drive the real {broker} venue"):
        check_prices_are_live(Route(feed, broker), VenueAccess(ccxt_url_overridden=broker != "ccxt",
                                                               alpaca_url_overridden=broker != "alpaca"))
    test_venue = VenueAccess(ccxt_url_overridden=broker == "ccxt", alpaca_url_overridden=broker == "alpaca")
    check_prices_are_live(Route(feed, broker), test_venue)  # a local test venue may take them
    check_prices_are_live(Route(broker, broker), VenueAccess())  # live bars may drive the real venue
    check_prices_are_live(Route(feed, "paper"), VenueAccess())


def test_safe_route_applies_every_rule_and_returns_the_route_when_all_pass() -> None:
    assert safe_route("live", {"crypto"}, "", "", LIVE_CCXT) == Route("ccxt", "ccxt")
    with pytest.raises(DataError, match="TRADEFORGE_LIVE_CONFIRM=yes"):
        safe_route("live", {"crypto"}, "", "", VenueAccess(ccxt_keys=True))
    with pytest.raises(DataError, match="TRADEFORGE_CCXT_API_KEY"):
        safe_route("live", {"crypto"}, "", "", VenueAccess(live_confirm="yes"))
    with pytest.raises(DataError, match="a replay feed cannot drive the real ccxt venue"):
        safe_route("live", {"crypto"}, "replay", "", LIVE_CCXT)


def test_venue_access_reads_the_settings_without_their_secret_values() -> None:
    plain = Settings.model_construct(live_confirm="", ccxt_api_key=None, ccxt_api_secret=None, alpaca_api_key=None,
                                     alpaca_api_secret=None, ccxt_rest_url=None, alpaca_trading_url=None)
    assert VenueAccess.of(plain) == VenueAccess()
    keyed = plain.model_copy(update={"live_confirm": "yes", "ccxt_api_key": SecretStr("k"),
                                     "ccxt_api_secret": SecretStr("s"), "alpaca_api_key": SecretStr("k"),
                                     "alpaca_trading_url": "http://127.0.0.1:1"})
    assert VenueAccess.of(keyed) == VenueAccess(live_confirm="yes", ccxt_keys=True, alpaca_keys=False,
                                                ccxt_url_overridden=False, alpaca_url_overridden=True)
