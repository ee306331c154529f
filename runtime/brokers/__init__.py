"""Brokers behind one protocol: paper (the engine's own fill model), and venue brokers."""

from runtime.brokers.base import Broker
from runtime.brokers.paper import PaperBroker

__all__ = ["Broker", "PaperBroker"]
