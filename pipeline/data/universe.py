"""The universe: the series the scheduled jobs keep current and backtest (setting ``universe``).

Each entry reads ``venue:SYMBOL:timeframe``:

* ``sample:BTC/USDT:1h`` — the built-in synthetic market;
* ``binance:BTC/USDT:1h`` (any ccxt exchange id) — that exchange through ccxt;
* ``alpaca:AAPL:1d`` — US stocks through Alpaca (filed under the venue ``us``);
* ``file:BTC/USDT:1h@/path/to/bars.parquet`` — a file or folder of bars; without ``@PATH`` the folder
  ``<data_dir>/imports/<SYMBOL-KEY>/<timeframe>/``. Imported crypto bars are filed under the default ccxt
  exchange (setting ``ccxt_exchange``), stocks under ``us``, as ``tradeforge ingest --source files`` does.

The symbol is everything between the first and the last ``:`` (so ``BTC/USDT:USDT`` perpetuals work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.clock import Clock
from pipeline.domain import SAMPLE_VENUE, AssetClass, DataError, Timeframe, parse_symbol, symbol_key
from pipeline.data.ingest import IngestReport, ingest
from pipeline.settings import Settings
from pipeline.data.sources.base import BarSource

ALPACA = "alpaca"
FILE = "file"
STOCK_VENUE = "us"


@dataclass(frozen=True)
class SeriesSpec:
    """One universe entry, parsed and validated."""

    source: str
    """``sample``, ``alpaca``, ``file`` or a ccxt exchange id."""
    symbol: str
    timeframe: Timeframe
    asset_class: AssetClass
    path: Path | None = None

    @property
    def text(self) -> str:
        suffix = f"@{self.path}" if self.path is not None else ""
        return f"{self.source}:{self.symbol}:{self.timeframe}{suffix}"

    def venue(self, settings: Settings) -> str:
        """The venue the series is filed under in the lake."""
        if self.source == SAMPLE_VENUE:
            return SAMPLE_VENUE
        if self.source in (ALPACA, FILE):
            if self.asset_class is AssetClass.STOCK:
                return STOCK_VENUE
            return settings.ccxt_exchange if self.source == FILE else self.source
        return self.source

    def import_path(self, settings: Settings) -> Path:
        """Where a ``file`` entry reads its bars."""
        if self.path is not None:
            return self.path
        return settings.data_dir / "imports" / symbol_key(self.symbol) / str(self.timeframe)


def parse_series(entry: str) -> SeriesSpec:
    """Parse ``venue:SYMBOL:timeframe`` (``file`` entries may end in ``@PATH``); errors name the entry."""
    text = entry.strip()
    path: Path | None = None
    if "@" in text:
        text, _, location = text.partition("@")
        if not location.strip():
            raise DataError(f"universe entry {entry!r}: nothing after '@' (give the file or folder to import)")
        path = Path(location.strip())
    source, _, rest = text.partition(":")
    symbol, _, timeframe = rest.rpartition(":")
    source = source.strip().lower()
    if not source or not symbol.strip() or not timeframe.strip():
        raise DataError(f"universe entry {entry!r} is not of the form venue:SYMBOL:timeframe (e.g. sample:BTC/USDT:1h)")
    if path is not None and source != FILE:
        raise DataError(f"universe entry {entry!r}: only 'file' entries take '@PATH'")
    try:
        canonical, asset_class = parse_symbol(symbol)
        tf = Timeframe.parse(timeframe.strip())
    except DataError as exc:
        raise DataError(f"universe entry {entry!r}: {exc}") from exc
    if source == ALPACA and asset_class is not AssetClass.STOCK:
        raise DataError(f"universe entry {entry!r}: alpaca serves US stocks, not the crypto pair {canonical}")
    return SeriesSpec(source, canonical, tf, asset_class, path)


def universe(settings: Settings) -> list[SeriesSpec]:
    """Every entry of the ``universe`` setting, parsed; an empty universe is an error."""
    if not settings.universe:
        raise DataError("the universe is empty: set TRADEFORGE_UNIVERSE (e.g. sample:BTC/USDT:1h)")
    return [parse_series(entry) for entry in settings.universe]


def build_source(spec: SeriesSpec, settings: Settings, clock: Clock) -> BarSource:
    """The bar source an entry is ingested from."""
    if spec.source == SAMPLE_VENUE:
        from pipeline.data.sources.sample import SampleSource

        return SampleSource(clock, settings.sample_seed)
    if spec.source == ALPACA:
        from pipeline.data.sources.alpaca_source import AlpacaSource

        return AlpacaSource(settings, clock)
    if spec.source == FILE:
        from pipeline.data.sources.files import FileSource

        return FileSource(spec.import_path(settings), clock, spec.venue(settings))
    from pipeline.data.sources.ccxt_source import CcxtSource

    return CcxtSource(settings, clock, exchange_id=spec.source)


def ingest_series(spec: SeriesSpec, settings: Settings, clock: Clock) -> IngestReport:
    """Ingest one universe entry (incremental, through the quality gate) and release its connections."""
    source = build_source(spec, settings, clock)
    try:
        return ingest(source, spec.symbol, spec.timeframe, settings, clock)
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
