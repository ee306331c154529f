"""Performance metrics of a backtest or a live run, each one recomputable by hand.

Inputs
------
``compute_metrics(equity, trades, fills, closes, periods_per_year)`` reads:

* ``equity`` — one row per bar: ``timestamp`` (``datetime64[ms, UTC]``, strictly increasing), ``equity``,
  ``cash`` (not used here), ``position_value`` (signed market value of the open position);
* ``trades`` — closed round trips, of which only ``pnl`` (net of fees) is used;
* ``fills`` — every fill, of which ``notional`` (``qty * price``, positive) and ``fee`` are used;
* ``closes`` — the close prices of the same bars as ``equity`` (same length, same order);
* ``periods_per_year`` — how many bars make one year (see ``bars_per_year``).

Notation: ``E[0] … E[n-1]`` is the equity of the ``n`` bars, ``t[0] … t[n-1]`` their timestamps,
``P = periods_per_year``, and the per-bar simple returns are ``r[i] = E[i] / E[i-1] - 1`` for
``i = 1 … n-1`` (there are ``n - 1`` of them). Returns are only defined while the equity they divide by is
positive: if the equity of any bar before the last one is 0 or negative, ``volatility``, ``sharpe`` and
``sortino`` are ``None``. ``days(a, b)`` is the calendar time from ``t[a]`` to ``t[b]``
in days (a fraction when the bars are shorter than a day): ``(t[b] - t[a]) / 24 h``.

Formulas
--------
The sums behind the mean, standard deviation and downside deviation of the returns, and the maximum drawdown,
are compiled (``pipeline.backtest.equity_stats``) and shared with the parameter sweep, which therefore reports the
same figures, to the last bit, as a backtest of the same parameters.

Returns and risk:

* ``total_return`` = ``E[n-1] / E[0] - 1``.
* ``cagr`` = ``(E[n-1] / E[0]) ** (P / (n - 1)) - 1``: growth annualised by the elapsed number of bars.
  ``None`` with fewer than 2 bars, when the final equity is negative, or when the annualised figure is too
  large for a float (a big gain over very few bars). ``-1.0`` when the final equity is exactly 0.
* ``volatility`` = ``stdev(r) * sqrt(P)``, with the sample standard deviation
  ``stdev(r) = sqrt(sum((r[i] - mean(r)) ** 2) / (n - 2))`` (ddof = 1). ``None`` with fewer than 2 returns
  (fewer than 3 bars).
* ``sharpe`` = ``mean(r) / stdev(r) * sqrt(P)``, risk-free rate 0. ``0.0`` when every return is the same
  (``stdev(r) = 0``, e.g. flat equity); ``None`` with fewer than 2 returns.
* ``sortino`` = ``mean(r) / DD * sqrt(P)`` with the downside deviation ``DD = sqrt(mean(min(r[i], 0) ** 2))``,
  the mean taken over *all* ``n - 1`` returns (non-negative ones count as 0). ``None`` when no return is
  negative (``DD = 0``) or there is no return at all.
* ``max_drawdown`` = the largest ``(M[i] - E[i]) / M[i]`` over the bars, where ``M[i] = max(E[0] … E[i])`` is
  the running peak: the largest peak-to-trough fall as a positive fraction (``0.25`` = a 25 % fall).
  ``0.0`` when equity never falls below an earlier peak.
* ``max_drawdown_duration_bars`` — a *drawdown stretch* starts at a peak bar ``p`` (the last bar at which the
  running peak was reached) and ends at the first later bar ``q`` whose equity is ``>= E[p]`` (the peak is
  regained, equalling counts); if the peak is never regained the stretch ends at the last bar ``n - 1``.
  Its length is ``q - p`` bars. This metric is the longest such length, ``0`` with no drawdown.
* ``max_drawdown_duration_days`` — the same stretches measured in calendar days, ``days(p, q)``, longest one.
  On a gap-free series (24/7 crypto) it is the same stretch as the bars figure; on a session calendar
  (stocks) the stretch that is longest in days can be another one than the longest in bars, and each
  figure reports its own longest.
* ``calmar`` = ``cagr / max_drawdown``. ``None`` when ``max_drawdown`` is 0 or ``cagr`` is ``None``.

Trades:

* ``trades`` = the number of closed round trips (rows of ``trades``).
* ``win_rate`` = (trades with ``pnl > 0``) / ``trades``; a zero-pnl trade is not a win. ``None`` with no trades.
* ``profit_factor`` = ``sum(pnl of trades with pnl > 0) / |sum(pnl of trades with pnl < 0)|``. ``None`` when no
  trade lost (``pnl < 0``), including when there is no trade.
* ``average_trade`` = ``mean(pnl)`` over all trades, in account currency. ``None`` with no trades.
* ``trades_per_day`` = ``trades / days(0, n-1)``. ``None`` when the bars span no time (a single bar).

Activity and costs:

* ``exposure`` = (bars with ``position_value != 0``) / ``n``: the share of bars spent in the market, long or
  short.
* ``turnover`` = ``sum(fills.notional) / mean(E)``: how many times the average equity was traded. ``None``
  when the mean equity is not positive.
* ``fees`` = ``sum(fills.fee)``, ``0.0`` with no fill.
* ``buy_and_hold_return`` = ``closes[n-1] / closes[0] - 1``: holding the instrument over the same bars.
* ``initial_equity`` = ``E[0]``, ``final_equity`` = ``E[n-1]``, ``bars`` = ``n``.

Every value is a plain Python ``float`` or ``int``, or ``None`` where the figure is undefined (never NaN or
infinity), so the result can be written as JSON as it is.

Rejected input (``DataError`` naming the input and the problem): no equity rows, a missing column, a
non-finite value, a first equity that is not positive, a missing timestamp or timestamps that do not
strictly increase, closes that are not positive or do not match the equity rows one for one, and a
``periods_per_year`` that is not a positive number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.backtest import equity_stats
from pipeline.domain import AssetClass, DataError, epoch_ms

SECONDS_PER_DAY = 86_400
CRYPTO_DAYS_PER_YEAR = 365.25
STOCK_SESSIONS_PER_YEAR = 252
STOCK_SESSION_SECONDS = 390 * 60
_MS_PER_DAY = SECONDS_PER_DAY * 1000

EQUITY_COLUMNS: tuple[str, ...] = ("timestamp", "equity", "position_value")
TRADE_COLUMNS: tuple[str, ...] = ("pnl",)
FILL_COLUMNS: tuple[str, ...] = ("notional", "fee")


def bars_per_year(timeframe_seconds: int, asset_class: str) -> float:
    """How many bars of ``timeframe_seconds`` make one year for an asset class (``crypto`` or ``stock``).

    * crypto trades 24/7: ``365.25 * 86400 / timeframe_seconds`` (1d → 365.25, 1h → 8766, 1m → 525960);
    * stocks trade 252 sessions a year: daily bars give ``252``; intraday bars give
      ``252 * 23400 / timeframe_seconds`` (a session is 390 minutes: 1m → 98280, 5m → 19656, 1h → 1638).
      An intraday bar longer than the session counts as one bar per session (``252``).
    """
    if isinstance(timeframe_seconds, bool) or not isinstance(timeframe_seconds, int | np.integer):
        raise DataError(f"timeframe_seconds {timeframe_seconds!r} is not valid: give a whole number of seconds")
    seconds = int(timeframe_seconds)
    if seconds <= 0:
        raise DataError(f"timeframe_seconds {seconds} is not valid: it must be positive")
    try:
        kind = AssetClass(str(asset_class).strip().lower())
    except ValueError:
        raise DataError(
            f"asset_class {asset_class!r} is not valid: use one of {', '.join(a.value for a in AssetClass)}"
        ) from None
    if kind is AssetClass.CRYPTO:
        return CRYPTO_DAYS_PER_YEAR * SECONDS_PER_DAY / seconds
    if seconds > SECONDS_PER_DAY:
        raise DataError(f"timeframe_seconds {seconds} is not supported for stocks: the longest bar is one day")
    if seconds == SECONDS_PER_DAY or seconds >= STOCK_SESSION_SECONDS:
        return float(STOCK_SESSIONS_PER_YEAR)
    return STOCK_SESSIONS_PER_YEAR * STOCK_SESSION_SECONDS / seconds


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name} must be a DataFrame, not {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{name} lacks column(s) {', '.join(missing)}")


def _finite_floats(values: object, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} holds values that are not numbers: {exc}") from exc
    if array.size and not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise DataError(f"{name} holds a missing or infinite value (first at row {bad})")
    return array


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _cagr(ratio: float, periods_per_year: float, n_bars: int) -> float | None:
    if n_bars < 2 or ratio < 0:
        return None
    if ratio == 0:
        return -1.0
    exponent = periods_per_year / (n_bars - 1) * math.log(ratio)
    if exponent > 700:
        return None
    return _finite_or_none(math.expm1(exponent))


def _drawdown_durations(e: np.ndarray, stamps_ms: np.ndarray) -> tuple[int, float]:
    """The longest drawdown stretch in bars and in days."""
    n = e.size
    peak = np.maximum.accumulate(e)
    at_peak = e >= peak
    index = np.arange(n)
    peak_index = np.maximum.accumulate(np.where(at_peak, index, 0))
    # stretches that end by regaining the peak: bar q at the peak right after an underwater bar q-1
    recovered = np.flatnonzero(at_peak[1:] & ~at_peak[:-1]) + 1
    starts = peak_index[recovered - 1]
    ends = recovered
    if not at_peak[-1]:  # the last stretch is still open at the end of the data
        starts = np.append(starts, peak_index[-1])
        ends = np.append(ends, n - 1)
    if starts.size == 0:
        return 0, 0.0
    duration_bars = int(np.max(ends - starts))
    duration_days = float(np.max(stamps_ms[ends] - stamps_ms[starts])) / _MS_PER_DAY
    return duration_bars, duration_days


def return_metrics(moments: np.ndarray, periods_per_year: float) -> tuple[float | None, float | None, float | None]:
    """Volatility, Sharpe and Sortino from ``equity_stats.return_moments`` (each ``None`` where undefined)."""
    count = int(moments[equity_stats.COUNT])
    if count == 0:
        return None, None, None
    root = math.sqrt(periods_per_year)
    mean = float(moments[equity_stats.MEAN])
    downside = float(moments[equity_stats.DOWNSIDE])
    sortino = _finite_or_none(mean / downside * root) if downside > 0 else None
    if count < 2:
        return None, None, sortino
    if moments[equity_stats.CONSTANT]:
        return 0.0, 0.0, sortino
    stdev = float(moments[equity_stats.STDEV])
    volatility = _finite_or_none(stdev * root)
    sharpe = _finite_or_none(mean / stdev * root) if stdev > 0 else 0.0
    return volatility, sharpe, sortino


def curve_metrics(moments: np.ndarray, drawdown: float, initial: float, final: float, n_bars: int,
                  periods_per_year: float) -> dict[str, float | None]:
    """The metrics an equity curve alone decides (``total_return``, ``cagr``, ``volatility``, ``sharpe``,
    ``sortino``, ``max_drawdown``, ``calmar``) from its compiled reductions (``pipeline.backtest.equity_stats``):
    one computation for a backtest and for every parameter set of a sweep."""
    ratio = final / initial
    volatility, sharpe, sortino = return_metrics(moments, periods_per_year)
    cagr = _cagr(ratio, periods_per_year, n_bars)
    calmar = _finite_or_none(cagr / drawdown) if cagr is not None and drawdown > 0 else None
    return {"total_return": ratio - 1.0, "cagr": cagr, "volatility": volatility, "sharpe": sharpe,
            "sortino": sortino, "max_drawdown": drawdown, "calmar": calmar}


def compute_metrics(
    equity: pd.DataFrame,
    trades: pd.DataFrame,
    fills: pd.DataFrame,
    closes: pd.Series,
    periods_per_year: float,
) -> dict[str, float | int | None]:
    """The performance metrics of one run; the formulas are in the module documentation."""
    _require_columns(equity, EQUITY_COLUMNS, "equity")
    _require_columns(trades, TRADE_COLUMNS, "trades")
    _require_columns(fills, FILL_COLUMNS, "fills")
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int | float | np.number):
        raise DataError(f"periods_per_year {periods_per_year!r} is not valid: give a positive number")
    ppy = float(periods_per_year)
    if not (math.isfinite(ppy) and ppy > 0):
        raise DataError(f"periods_per_year {periods_per_year!r} is not valid: give a positive number")

    n = len(equity)
    if n == 0:
        raise DataError("equity has no rows: metrics need at least one bar")
    e = _finite_floats(equity["equity"].to_numpy(), "equity column 'equity'")
    position = _finite_floats(equity["position_value"].to_numpy(), "equity column 'position_value'")
    if e[0] <= 0:
        raise DataError(f"equity starts at {e[0]!r}: the initial equity must be positive")
    try:
        stamps = epoch_ms(equity["timestamp"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"equity column 'timestamp' holds values that are not timestamps: {exc}") from exc
    if bool(np.any(stamps == np.iinfo(np.int64).min)):
        raise DataError("equity column 'timestamp' holds a missing timestamp (NaT)")
    if n > 1 and not bool(np.all(np.diff(stamps) > 0)):
        raise DataError("equity column 'timestamp' must increase strictly from row to row")

    close = _finite_floats(np.asarray(closes), "closes")
    if close.size != n:
        raise DataError(f"closes has {close.size} values but equity has {n} rows: give the closes of the same bars")
    if not bool(np.all(close > 0)):
        raise DataError(f"closes must be positive prices (row {int(np.flatnonzero(close <= 0)[0])} is not)")

    pnl = _finite_floats(trades["pnl"].to_numpy(), "trades column 'pnl'")
    notional = _finite_floats(fills["notional"].to_numpy(), "fills column 'notional'")
    fee = _finite_floats(fills["fee"].to_numpy(), "fills column 'fee'")

    initial = float(e[0])
    final = float(e[-1])
    elapsed_days = float(stamps[-1] - stamps[0]) / _MS_PER_DAY
    e = np.ascontiguousarray(e)
    curve = curve_metrics(equity_stats.return_moments(e), equity_stats.max_drawdown(e), initial, final, n, ppy)
    dd_bars, dd_days = _drawdown_durations(e, stamps)

    n_trades = int(pnl.size)
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    win_rate = wins.size / n_trades if n_trades else None
    profit_factor = float(wins.sum()) / abs(float(losses.sum())) if losses.size else None
    average_trade = float(pnl.mean()) if n_trades else None
    trades_per_day = n_trades / elapsed_days if elapsed_days > 0 else None

    mean_equity = float(np.mean(e))
    turnover = _finite_or_none(float(notional.sum()) / mean_equity) if mean_equity > 0 else None

    return {
        **{key: curve[key] for key in ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown")},
        "max_drawdown_duration_bars": dd_bars,
        "max_drawdown_duration_days": dd_days,
        "calmar": curve["calmar"],
        "trades": n_trades,
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "average_trade": average_trade,
        "trades_per_day": trades_per_day,
        "exposure": float(np.count_nonzero(position)) / n,
        "turnover": turnover,
        "fees": float(fee.sum()),
        "buy_and_hold_return": float(close[-1] / close[0] - 1.0),
        "initial_equity": initial,
        "final_equity": final,
        "bars": n,
    }
