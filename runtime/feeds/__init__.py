"""Market-data feeds for the runtime: closed bars in time order, in batches.

* ``ReplayFeed`` (``runtime.feeds.replay``): known bars from the lake or a Parquet file;
* ``CcxtFeed`` (``runtime.feeds.ccxt_feed``): live candles from a ccxt exchange by REST polling;
* ``AlpacaFeed`` (``runtime.feeds.alpaca_feed``): live US stock bars from Alpaca's stream, with REST backfill,
  on the NYSE calendar.

A strategy that reads other series (``pipeline.strategies.other_series``) gets them as feed keys of their own, at
their own timeframe, from the same feed; ``WaitingFeed`` (``runtime.feeds.waiting``) holds a live feed's bars
back until those series have delivered the bars closing with them.

All of them satisfy ``Feed`` and yield ``Batch`` objects. The live feeds are imported from their modules so
that a replay does not load ccxt or alpaca-py.
"""

from runtime.feeds.base import Batch, Feed, FeedError
from runtime.feeds.replay import ReplayFeed

__all__ = ["Batch", "Feed", "FeedError", "ReplayFeed"]
