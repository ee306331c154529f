"""From a ``RuntimeConfig`` and the settings to a running node: the portfolio, the feed, the broker, the model
scorers, the Telegram edge and the ``Node`` itself.

The safety rules (``runtime.safety``) are checked before anything is opened or connected. Venue clients (ccxt,
alpaca-py), MLflow and the Telegram client are imported only when the configuration uses them, so a paper replay
starts without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.backtest.portfolio_config import PortfolioConfig
from pipeline.domain import DataError, Timeframe, parse_symbol, parse_utc
from pipeline.settings import Settings
from runtime.config import RuntimeConfig
from runtime.safety import Route, VenueAccess, safe_route
from runtime.vetting import UNCHECKED, vet

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.clock import Clock
    from pipeline.state import StateStore
    from runtime.brokers.base import Broker
    from runtime.feeds import Feed
    from runtime.models import ModelScorer
    from runtime.node import Node, RunSummary

Say = Callable[[str], None]


def portfolio_of(config: RuntimeConfig) -> PortfolioConfig:
    """The portfolio file, or a one-sleeve portfolio of the single strategy the options describe."""
    from pipeline.backtest.portfolio_config import load_portfolio

    if config.portfolio is not None:
        return load_portfolio(config.portfolio)
    if config.strategy is None or config.symbol is None:
        raise DataError("give --portfolio FILE, or --strategy NAME and --symbol SYMBOL")
    engine: dict[str, Any] = {"fee_bps": config.fee_bps, "slippage_bps": config.slippage_bps, "fill": config.fill,
                              "max_position": config.max_position,
                              "breaker_cooldown_bars": config.breaker_cooldown_bars}
    if config.no_breakers:
        engine.update(max_drawdown=None, daily_loss=None, max_consecutive_losses=None, max_trades_per_day=None)
    Timeframe.parse(config.timeframe)
    return PortfolioConfig.model_validate(
        {"cash": config.cash, "strategies": [{"id": "main", "strategy": config.strategy, "symbols": [config.symbol],
                                              "timeframe": config.timeframe, "allocation": 1.0,
                                              "params": config.param_map, "engine": engine}]}
    )


def route_of(config: RuntimeConfig, portfolio: PortfolioConfig, settings: Settings) -> Route:
    """The feed and broker of this start, once every safety rule passes."""
    from pipeline.backtest.portfolio import sleeves_of

    kinds = {parse_symbol(s.symbol)[1].value for s in sleeves_of(portfolio)}
    return safe_route(config.mode, kinds, config.feed, config.broker, VenueAccess.of(settings))


def _timeframe(portfolio: PortfolioConfig) -> Timeframe:
    from pipeline.backtest.portfolio import sleeves_of

    timeframes = {s.spec.timeframe for s in sleeves_of(portfolio)}
    if len(timeframes) != 1:
        raise DataError("a runtime portfolio must use one timeframe for every strategy")
    return Timeframe.parse(timeframes.pop())


SeriesKeys = dict[str, tuple[str, ...]]
"""Per sleeve, the feed keys of the other series its strategy reads (``pipeline.strategies.other_series``)."""


def replay_bars(
    settings: Settings, portfolio: PortfolioConfig, data: Path | None, venue: str | None, start: str | None,
    end: str | None,
) -> tuple[dict[str, pd.DataFrame], dict[str, str], Timeframe, SeriesKeys]:
    """The bars a replay feed plays (from the file ``data``, or the lake), keyed by feed; the feed key of each
    sleeve; the portfolio's timeframe; the feed keys of the other series each sleeve reads, whose bars come from
    the lake over the same span, exactly as a backtest reads them (``pipeline.backtest.series``)."""
    from pipeline.backtest.portfolio import sleeves_of
    from pipeline.backtest.series import lake_venue, read_series
    from pipeline.strategies.other_series import series_of

    sleeves = sleeves_of(portfolio)
    tf = _timeframe(portfolio)
    lo, hi = parse_utc(start, "--start"), parse_utc(end, "--end")
    frames: dict[str, pd.DataFrame] = {}
    feed_of: dict[str, str] = {}
    symbols = sorted({s.symbol for s in sleeves})
    if data is not None and len(symbols) != 1:
        raise DataError("--data replays one symbol; this portfolio trades " + ", ".join(symbols))
    for sleeve in sleeves:
        key = f"{venue or ('file' if data else 'lake')}:{sleeve.symbol}:{tf}"
        feed_of[sleeve.key] = key
        if key in frames:
            continue
        if data is not None:  # through the quality gate ingestion uses, as a backtest's --data file
            from pipeline.backtest.bar_file import read_checked_bars
            from pipeline.clock import SystemClock
            from pipeline.domain import Instrument

            bars, _ = read_checked_bars(data, tf, Instrument.of(venue or "file", sleeve.symbol), lo, hi,
                                        SystemClock().now(), settings.spike_z)
        else:
            from pipeline.data.catalog import read_bars

            bars = read_bars(settings, sleeve.symbol, tf, lo, hi, venue)
        if bars.empty:
            raise DataError(f"no {sleeve.symbol} {tf} bars to replay in the selected range")
        frames[key] = bars
    series_keys: SeriesKeys = {}
    for sleeve in sleeves:
        own = venue if data is not None else lake_venue(settings, sleeve.symbol, venue)
        keys = []
        for spec in series_of(sleeve.strategy):
            keys.append(f"{spec.venue or own or 'lake'}:{spec.symbol}:{spec.timeframe}")
            if keys[-1] not in frames:
                frames[keys[-1]] = read_series(settings, f"sleeve {sleeve.key!r} ({sleeve.strategy.name})", spec, own,
                                               lo, hi)
        series_keys[sleeve.key] = tuple(keys)
    return frames, feed_of, tf, series_keys


def live_series(portfolio: PortfolioConfig, prefix: str) -> tuple[SeriesKeys, dict[str, str]]:
    """The feed keys of the other series each sleeve reads from a live feed of venue ``prefix``, and the symbol
    of each such key; a series on another venue is a ``DataError`` (a live feed reads one venue)."""
    from pipeline.backtest.portfolio import sleeves_of
    from pipeline.strategies.other_series import series_of

    series_keys: SeriesKeys = {}
    symbols: dict[str, str] = {}
    for sleeve in sleeves_of(portfolio):
        keys = []
        for spec in series_of(sleeve.strategy):
            if spec.venue is not None and spec.venue != prefix:
                raise DataError(f"sleeve {sleeve.key!r} reads {spec.text()}, but this live feed reads {prefix!r}: "
                                "a live runtime reads every series from the venue of its feed")
            keys.append(f"{prefix}:{spec.symbol}:{spec.timeframe}")
            symbols[keys[-1]] = spec.symbol
        series_keys[sleeve.key] = tuple(keys)
    return series_keys, symbols


def live_feed(settings: Settings, name: str, portfolio: PortfolioConfig, venue: str | None,
              ws: bool = False) -> tuple[Feed, dict[str, str], Timeframe, SeriesKeys]:
    """A live feed (sample, ccxt or alpaca) for every sleeve's symbol and every other series a sleeve reads, the
    feed key of each sleeve and the feed keys of the other series each reads. ``ws``: ccxt candles from the
    exchange's websocket (``runtime.feeds.ccxt_ws``) where ccxt.pro has them."""
    from pipeline.backtest.portfolio import sleeves_of
    from pipeline.clock import SystemClock

    sleeves = sleeves_of(portfolio)
    tf = _timeframe(portfolio)
    prefix = {"sample": "sample", "ccxt": venue or settings.ccxt_exchange, "alpaca": "us"}[name]
    feed_of = {s.key: f"{prefix}:{s.symbol}:{tf}" for s in sleeves}
    series_keys, others = live_series(portfolio, prefix)
    symbols = {**others, **{f"{prefix}:{s.symbol}:{tf}": s.symbol for s in sleeves}}
    clock = SystemClock()
    common: dict[str, Any] = {"poll_s": settings.feed_poll_seconds, "warmup": settings.warmup_bars,
                              "series": sorted(set(others) - set(feed_of.values()))}
    if name == "sample":
        from runtime.feeds.sample_feed import SampleFeed

        return SampleFeed(symbols, tf, clock, settings.sample_seed, **common), feed_of, tf, series_keys
    if name == "ccxt":
        return ccxt_live_feed(settings, prefix, symbols, tf, ws, common), feed_of, tf, series_keys
    from pipeline.data.sources.alpaca_source import make_client
    from runtime.feeds.alpaca_feed import AlpacaFeed, alpaca_stream

    stream = alpaca_stream(settings, settings.alpaca_stream_url) if str(tf) == "1m" else None
    return (AlpacaFeed(make_client(settings), stream, symbols, tf, clock, feed=settings.alpaca_feed,
                       stream_factory=lambda: alpaca_stream(settings, settings.alpaca_stream_url),
                       backoff_base_s=max(settings.retry_backoff_s, 0.1), **common), feed_of, tf, series_keys)


def ccxt_live_feed(settings: Settings, exchange_id: str, symbols: dict[str, str], tf: Timeframe, ws: bool,
                   common: dict[str, Any], clock: Clock | None = None) -> Feed:
    """Closed candles of ``symbols`` (feed key → symbol) from a ccxt exchange: from its websocket on top of REST
    when ``ws`` is asked and ccxt.pro streams its candles, else by REST polling (and, when ``ws`` was asked, a note
    saying so, recorded once as a runtime event). ``clock``: the market clock (the system's by default)."""
    from pipeline.clock import SystemClock
    from pipeline.data.sources.ccxt_source import build_exchange
    from runtime.feeds.ccxt_feed import CcxtFeed

    exchange = build_exchange(settings, exchange_id)
    clock = clock or SystemClock()
    options: dict[str, Any] = {**common, "backoff_base_s": max(settings.retry_backoff_s, 0.1)}
    if ws:
        from pipeline.data.sources.ccxt_stream import build_ws_exchange
        from runtime.feeds.ccxt_ws import CcxtWsFeed

        streaming = build_ws_exchange(settings, exchange_id)
        if streaming is not None:
            return CcxtWsFeed(exchange, streaming, symbols, tf, clock, **options)
    feed = CcxtFeed(exchange, symbols, tf, clock, **options)
    if ws:
        feed.note("feed_fallback", f"{exchange_id} streams no candles in ccxt.pro: bars are polled through REST "
                                   f"every {settings.feed_poll_seconds:g} s instead of the websocket")
    return feed


def waiting_feed(feed: Feed, feed_of: dict[str, str], series_keys: SeriesKeys, settings: Settings,
                 store: StateStore) -> Feed:
    """``feed`` whose bars wait for the other series read with them (``runtime.feeds.waiting``); a bar decided
    without one is recorded as a runtime event ``late_series``."""
    from pipeline.clock import SystemClock
    from runtime.feeds.waiting import LATE, WaitingFeed

    needs: dict[str, set[str]] = {}
    for sleeve, key in feed_of.items():
        needs.setdefault(key, set()).update(series_keys.get(sleeve, ()))
    clock = getattr(feed, "clock", None) or SystemClock()  # the live feed's own clock
    return WaitingFeed(feed, {key: tuple(sorted(others)) for key, others in needs.items()}, clock,
                       settings.stale_after_bars, on_late=lambda text: store.record_event(LATE, text))


def make_broker(settings: Settings, mode: str, name: str, venue: str | None) -> Broker:
    """The broker object (imports of venue clients only when they are used)."""
    if name == "paper":
        from runtime.brokers import PaperBroker

        return PaperBroker()
    if name == "ccxt":
        from pipeline.data.sources.ccxt_source import build_exchange
        from runtime.brokers.ccxt import CcxtBroker

        return CcxtBroker(build_exchange(settings, venue or settings.ccxt_exchange), max_retries=settings.max_retries,
                          backoff_s=settings.retry_backoff_s)
    from runtime.brokers.alpaca import AlpacaBroker, make_trading_client

    return AlpacaBroker(make_trading_client(settings, paper=mode != "live"), max_retries=settings.max_retries,
                        backoff_s=settings.retry_backoff_s)


def scorers(settings: Settings, portfolio: PortfolioConfig, tf: Timeframe) -> dict[str, ModelScorer]:
    """A production-model scorer for every sleeve whose strategy reads ``model_score``."""
    from pipeline.backtest.portfolio import sleeves_of
    from pipeline.clock import SystemClock
    from pipeline.domain import symbol_key

    sleeves = [s for s in sleeves_of(portfolio) if "model_score" in s.strategy.requires]
    if not sleeves:
        return {}
    from pipeline.models.registry import ModelRegistry, model_name
    from runtime.models import ModelScorer

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    return {
        s.key: ModelScorer(registry, model_name("hybrid", symbol_key(s.symbol), str(tf)), parse_symbol(s.symbol)[1],
                           SystemClock(), settings.model_poll_seconds)
        for s in sleeves
    }


class TelegramEdge:
    """The runtime's Telegram edge: notifications out, operator commands in (through the state store)."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        from pipeline.state import StateStore
        from runtime.control import StoreControl
        from runtime.notify import CommandBot, Notifier

        self.notifier = Notifier(settings.telegram_token, settings.telegram_chat_ids, settings.telegram_api_url,
                                 settings.telegram_rate_per_minute, timeout_s=settings.http_timeout_s,
                                 max_retries=settings.max_retries, backoff_s=settings.retry_backoff_s)
        self.bot = CommandBot(self.notifier, StoreControl(StateStore(settings.state_url)), StoreControl(store))

    def start(self) -> None:
        self.notifier.start()
        self.bot.start()

    def stop(self) -> None:
        self.bot.stop()
        self.notifier.stop(timeout=10)


def telegram(settings: Settings, store: StateStore) -> TelegramEdge | None:
    """Telegram when a bot token is configured (its client library is loaded only then), else None."""
    token = settings.telegram_token
    if token is None or not token.get_secret_value().strip():
        return None
    return TelegramEdge(settings, store)


@dataclass
class WiredRuntime:
    """A node with what it owns besides itself: the state store and the Telegram edge."""

    node: Node
    store: StateStore
    telegram: TelegramEdge | None

    def close(self) -> None:
        if self.telegram is not None:
            self.telegram.stop()
        self.store.close()


FEED_ALERTS = frozenset({"stream_rejected"})
"""Feed events an operator must act on (a venue refused the stream for good): sent to Telegram as well."""


def _feed_event(store: StateStore, edge: TelegramEdge | None, kind: str, text: str) -> None:
    store.record_event(kind, text)
    if kind in FEED_ALERTS and edge is not None:
        edge.notifier.send(text)


def wire(config: RuntimeConfig, settings: Settings, say: Say | None = None) -> WiredRuntime:
    """Check the safety rules, then build the feed, broker, store, scorers, Telegram edge and node of ``config``.
    With ``config.verbose`` every event also goes to ``say``."""
    from pipeline.state import StateStore
    from runtime.feeds import ReplayFeed
    from runtime.feeds.base import LiveFeed
    from runtime.node import Node

    portfolio = portfolio_of(config)
    route = route_of(config, portfolio, settings)
    unchecked = vet(portfolio, settings.warmup_bars, config.allow_unchecked)
    order_router = make_broker(settings, config.mode, route.broker, config.venue)
    bar_feed: Feed
    if route.feed == "replay":
        frames, feed_of, tf, series_keys = replay_bars(settings, portfolio, config.data, config.venue, config.start,
                                                       config.end)
        bar_feed = ReplayFeed(frames, tf, speed=config.pace, batch_size=config.batch)
    else:
        bar_feed, feed_of, tf, series_keys = live_feed(settings, route.feed, portfolio, config.venue,
                                                       ws=config.ws or settings.ccxt_websocket)
    store = StateStore(settings.state_url)
    venue_feed = bar_feed if isinstance(bar_feed, LiveFeed) else None
    if bar_feed.live and any(series_keys.values()):  # a live venue may deliver another series a little later
        bar_feed = waiting_feed(bar_feed, feed_of, series_keys, settings, store)
    for allowed in unchecked:
        store.record_event(UNCHECKED, f"traded although it failed its check (--allow-unchecked):\n{allowed.report}",
                           sleeve=allowed.sleeve)
    edge = telegram(settings, store)
    if venue_feed is not None:  # what the feed does about its venue connection becomes a runtime event
        venue_feed.on_event = partial(_feed_event, store, edge)
    verbose = say if config.verbose else None

    def on_event(kind: str, text: str) -> None:
        if verbose is not None:
            verbose(text)
        if edge is not None:
            edge.notifier.send(text)  # start, stop, fills, breakers and commands all go to Telegram

    node = Node(store, portfolio, bar_feed, feed_of, order_router,
                mode=config.mode, on_event=on_event, scorers=scorers(settings, portfolio, tf),
                stale_after_bars=settings.stale_after_bars, heartbeat_s=settings.heartbeat_seconds,
                series_keys=series_keys, reconcile_seconds=settings.reconcile_seconds,
                reconcile_tolerance=settings.reconcile_tolerance)
    return WiredRuntime(node, store, edge)


def run(config: RuntimeConfig, settings: Settings, say: Say | None = None) -> RunSummary:
    """Wire and start the runtime (startup is recovery), then trade until the feed ends or a stop is requested
    (SIGTERM or SIGINT stop it after the batch in flight). Raises ``DataError`` or ``StartupError`` when it
    cannot start."""
    import signal

    runtime = wire(config, settings, say)
    try:
        if runtime.telegram is not None:
            runtime.telegram.start()
        runtime.node.start(fresh=config.fresh)
        node = runtime.node
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda signum, _frame: node.request_stop(f"signal {signal.Signals(signum).name}"))
        return node.run()
    finally:
        runtime.close()
