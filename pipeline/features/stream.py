"""``FeatureStream``: the features of one bar series (``pipeline.features.build``), advanced by the next closed bars.

``update(bars)`` takes the next rows of a canonical bar frame, continuing those given before, and returns their
feature values (``spec.columns(asset_class)`` order; all NaN on the stream's first ``spec.warmup`` bars). The
work per bar and the state held are bounded by the spec's windows and periods, whatever the uptime: the last
values each window or lag needs, the recursions' current values (EMAs, MACD, Wilder's RSI and ATR) and the
run of equal values ending each window. ``build_features`` is this stream run once over a whole frame, so the
runtime (bar by bar) and the batch (whole history) compute the same values bit for bit from the same first bar.
``state()`` is an exact JSON-serialisable snapshot; ``restore(state)`` and ``from_state`` continue from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import BAR_COLUMNS, PRICE_COLUMNS, AssetClass, DataError, epoch_ms
from pipeline.features.spec import FeatureSpec
from pipeline.features.streaming import Ema, Lag, Rsi, Stateful, Wilder, Window, section

_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
_MONDAY_OFFSET_MS = 3 * _DAY_MS
"""1970-01-01 was a Thursday: adding three days makes Monday 00:00 UTC the start of the week."""


def check_bar_frame(bars: pd.DataFrame) -> None:
    """Refuse a frame without the bar columns or with a timestamp column that is not tz-aware."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"bar frame lacks column(s) {', '.join(missing)}; expected {', '.join(BAR_COLUMNS)}")
    if not isinstance(bars["timestamp"].dtype, pd.DatetimeTZDtype):
        raise DataError(f"column 'timestamp' must hold tz-aware UTC times, got dtype {bars['timestamp'].dtype}")


def check_bars(bars: pd.DataFrame, last_ms: int | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check the next bars of a series (after the bar opened at ``last_ms``).

    Returns their open times in epoch ms and the float64 values of the price and volume columns.
    """
    check_bar_frame(bars)
    millis = epoch_ms(bars["timestamp"])
    if last_ms is not None and len(millis) and millis[0] <= last_ms:
        raise DataError(
            f"bar timestamps must be strictly increasing; row 0 ({bars['timestamp'].iloc[0]}) is not later than "
            f"the last bar already seen ({pd.Timestamp(last_ms, unit='ms', tz='UTC')})"
        )
    steps = np.diff(millis)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise DataError(f"bar timestamps must be strictly increasing; row {row} ({bars['timestamp'].iloc[row]}) is not")
    columns = {}
    for name in (*PRICE_COLUMNS, "volume"):
        values = bars[name].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | ((values <= 0.0) if name != "volume" else (values < 0.0))
        if bad.any():
            row = int(np.argmax(bad))
            kind = "non-negative" if name == "volume" else "positive"
            raise DataError(f"column {name!r} must be finite and {kind}; row {row} holds {values[row]}")
        columns[name] = values
    return millis, columns


def _cyclical(millis: np.ndarray, period_ms: int, offset_ms: int) -> list[np.ndarray]:
    angle = 2.0 * np.pi * (((millis + offset_ms) % period_ms) / period_ms)
    return [np.sin(angle), np.cos(angle)]


class FeatureStream:
    """The features of one bar series, advanced by the next bars with constant work per bar."""

    def __init__(self, spec: FeatureSpec, asset_class: AssetClass) -> None:
        self.spec = spec
        self.asset_class = AssetClass(asset_class)
        self.columns: list[str] = spec.columns(self.asset_class)
        self._seen = 0
        self._last_ms: int | None = None
        fast, slow, signal = spec.macd
        self._previous_log = Lag(1)
        self._previous_close = Lag(1)
        self._returns = [Lag(h) for h in spec.return_horizons]
        self._sma = [Window(w) for w in spec.ma_windows]
        self._ema = [Ema.of_span(w) for w in spec.ma_windows]
        self._rsi = Rsi(spec.rsi_period)
        self._macd = (Ema.of_span(fast), Ema.of_span(slow), Ema.of_span(signal))
        self._bands = Window(spec.bollinger[0], 0, with_std=True)
        self._atr = Wilder(spec.atr_period)
        self._rvol = [Window(w, 1, with_std=True) for w in spec.vol_windows]
        self._volume = Window(spec.volume_window, 1, with_std=True)

    def __repr__(self) -> str:
        return f"FeatureStream(spec={self.spec.hash()}, asset_class={self.asset_class.value}, bars_seen={self._seen})"

    @property
    def bars_seen(self) -> int:
        """Bars given to ``update`` so far."""
        return self._seen

    def update(self, bars: pd.DataFrame) -> np.ndarray:
        """Feature values of the next ``bars``: float64 ``(len(bars), len(columns))``, NaN rows in the warm-up.

        ``bars`` continue those given before (a canonical bar frame: tz-aware open times later than the last bar
        seen and strictly increasing, finite positive prices, finite non-negative volume); ``DataError`` names
        what is wrong, and a refused batch leaves the stream as it was.
        """
        millis, values = check_bars(bars, self._last_ms)
        n = len(bars)
        out = np.empty((len(self.columns), n)).T  # column-major: each feature is one contiguous column
        if not n:
            return out
        for j, column in enumerate(self._advance(values, millis)):
            out[:, j] = column
        out[: max(0, self.spec.warmup - self._seen)] = np.nan
        self._seen += n
        self._last_ms = int(millis[-1])
        return out

    def _advance(self, bars: dict[str, np.ndarray], millis: np.ndarray) -> list[np.ndarray]:
        """Every feature column over the new rows (NaN where a formula is undefined), in ``columns`` order."""
        open_, high, low, close, volume = (bars[c] for c in ("open", "high", "low", "close", "volume"))
        log_close = np.log(close)
        previous_log = self._previous_log.update(log_close)
        one_bar = log_close - previous_log
        columns = [log_close - lag.update(log_close) for lag in self._returns]
        columns += [close / sma.update(close)[0] - 1.0 for sma in self._sma]
        columns += [close / ema.update(close) - 1.0 for ema in self._ema]
        columns.append(self._rsi.update(close))
        columns += self._macd_columns(close)
        columns += self._bollinger(close)
        previous = self._previous_close.update(close)
        true_range = np.fmax(high - low, np.fmax(np.abs(high - previous), np.abs(low - previous)))
        columns.append(self._atr.update(true_range) / close)
        skip = 1 if self._seen == 0 else 0  # the first bar has no one-bar return
        for window in self._rvol:
            vol = np.full(len(close), np.nan)
            _, vol[skip:] = window.update(one_bar[skip:])
            columns.append(vol)
        columns.append(self._volume_z(volume))
        columns.append((high - low) / close)
        columns += _cyclical(millis, _DAY_MS, 0)
        columns += _cyclical(millis, _WEEK_MS, _MONDAY_OFFSET_MS)
        if self.asset_class is AssetClass.STOCK:
            columns.append(np.log(open_) - previous_log)
        return columns

    def _macd_columns(self, close: np.ndarray) -> list[np.ndarray]:
        fast, slow, signal = self._macd
        line = fast.update(close) - slow.update(close)
        smoothed = signal.update(line)
        return [line / close, smoothed / close, (line - smoothed) / close]

    def _bollinger(self, close: np.ndarray) -> list[np.ndarray]:
        k = self.spec.bollinger[1]
        mid, sd = self._bands.update(close)
        band_width = 2.0 * k * sd
        with np.errstate(invalid="ignore", divide="ignore"):
            percent_b = np.where(sd > 0.0, (close - mid) / band_width + 0.5, 0.5)
        percent_b[np.isnan(sd)] = np.nan
        return [percent_b, band_width / mid]

    def _volume_z(self, volume: np.ndarray) -> np.ndarray:
        level = np.log1p(volume)
        mean, sd = self._volume.update(level)
        with np.errstate(invalid="ignore", divide="ignore"):
            z: np.ndarray = np.where(sd > 0.0, (level - mean) / sd, 0.0)
        z[np.isnan(sd)] = np.nan
        return z

    # ----------------------------------------------------------------------------------------------- state
    def _parts(self) -> dict[str, Stateful]:
        spec = self.spec
        parts: dict[str, Stateful] = {"previous_log_close": self._previous_log, "previous_close": self._previous_close}
        parts.update({f"lag_{h}": lag for h, lag in zip(spec.return_horizons, self._returns, strict=True)})
        parts.update({f"sma_{w}": sma for w, sma in zip(spec.ma_windows, self._sma, strict=True)})
        parts.update({f"ema_{w}": ema for w, ema in zip(spec.ma_windows, self._ema, strict=True)})
        parts.update({"rsi": self._rsi, "macd_fast": self._macd[0], "macd_slow": self._macd[1]})
        parts.update({"macd_signal": self._macd[2], "bollinger": self._bands, "atr": self._atr})
        parts.update({f"rvol_{w}": rvol for w, rvol in zip(spec.vol_windows, self._rvol, strict=True)})
        parts["volume"] = self._volume
        return parts

    def state(self) -> dict[str, Any]:
        """The exact state (JSON-serialisable; its size does not depend on ``bars_seen``)."""
        return {
            "spec": self.spec.hash(),
            "asset_class": self.asset_class.value,
            "bars_seen": self._seen,
            "last_ms": self._last_ms,
            "parts": {name: part.state() for name, part in self._parts().items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of a stream with the same spec and asset class); all or nothing."""
        restored = FeatureStream.from_state(self.spec, self.asset_class, state)
        self.__dict__.update(restored.__dict__)

    @classmethod
    def from_state(cls, spec: FeatureSpec, asset_class: AssetClass, state: dict[str, Any]) -> FeatureStream:
        """A stream that continues exactly where the one that saved ``state`` stopped."""
        stream = cls(spec, asset_class)
        if state.get("spec") != spec.hash() or state.get("asset_class") != stream.asset_class.value:
            raise DataError(
                f"saved feature stream is of feature set {state.get('spec')!r} ({state.get('asset_class')!r}), "
                f"not {spec.hash()} ({stream.asset_class.value})"
            )
        seen, last_ms = state.get("bars_seen"), state.get("last_ms")
        if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
            raise DataError(f"saved feature stream field 'bars_seen' must be a non-negative integer, got {seen!r}")
        if (last_ms is None) != (seen == 0) or not (last_ms is None or isinstance(last_ms, int)):
            raise DataError(f"saved feature stream field 'last_ms' ({last_ms!r}) does not fit bars_seen {seen}")
        parts = section(state, "parts", "feature stream")
        for name, part in stream._parts().items():
            part.restore(section(parts, name, "feature stream"))
        stream._seen, stream._last_ms = seen, last_ms
        return stream
