"""Brokers behind one protocol: paper (the engine's own fill model), and venue brokers (ccxt, Alpaca).

The venue brokers are imported from their modules (``runtime.brokers.ccxt``, ``runtime.brokers.alpaca``) so that
a paper runtime does not load the venue clients.
"""

from runtime.brokers.base import Broker, client_order_id
from runtime.brokers.paper import PaperBroker
from runtime.brokers.submission import VenueUnavailable

__all__ = ["Broker", "PaperBroker", "VenueUnavailable", "client_order_id"]
