"""Feature-building benchmark: the default feature set on the real BTC/USDT 1m file and on 10 synthetic
symbols × 1 year of 1-minute bars, plus the rolling-window engine comparison behind ``pipeline.features.build``.

Data: the real ``binance_BTC-USDT_1m.parquet`` (653,623 bars) and 10 series of 525,600 bars each (geometric
Brownian motion, 80 % annual volatility, log-normal volume; seeds 42..51), each built separately as the
feature flow does. Printed: seconds and rows/s per run, the total for the 10 symbols, and the time of a
20-bar and a 200-bar rolling mean + population standard deviation over the real file with pandas
``rolling``, a DuckDB window query and the compiled window kernel that the features use (with the largest
relative error of each standard deviation against an exact per-window ``numpy`` computation).

    python bench/features.py [--data ../shared/data/binance_BTC-USDT_1m.parquet] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))

from synthetic import gbm_bars  # noqa: E402

from pipeline.domain import AssetClass  # noqa: E402
from pipeline.features.build import FeatureSpec, build_features, window_mean_std  # noqa: E402

SPEC = FeatureSpec()
from synthetic import MINUTES_PER_YEAR  # noqa: E402

SYMBOLS = 10
WINDOWS = (20, 200)
REAL_FILE = "binance_BTC-USDT_1m.parquet"


def default_data() -> Path:
    """The real BTC/USDT 1m file in ``shared/data`` next to the repository (``TRADEFORGE_SHARED_DATA`` wins)."""
    configured = os.environ.get("TRADEFORGE_SHARED_DATA")
    folders = [Path(configured)] if configured else []
    folders += [parent / "shared" / "data" for parent in REPO.parents]
    for folder in folders:
        if (folder / REAL_FILE).exists():
            return folder / REAL_FILE
    return Path("/work/shared/data") / REAL_FILE


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rolling_comparison(close: np.ndarray, window: int, repeat: int) -> None:
    exact_std = sliding_window_view(close, window).std(axis=1)
    series = pd.Series(close)
    con = duckdb.connect()
    con.register("bars", pd.DataFrame({"i": np.arange(close.size), "close": close}))
    query = (
        f"SELECT AVG(close) OVER w AS m, STDDEV_POP(close) OVER w AS s FROM bars "
        f"WINDOW w AS (ORDER BY i ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW) ORDER BY i"
    )

    def with_pandas() -> np.ndarray:
        series.rolling(window).mean().to_numpy()
        return series.rolling(window).std(ddof=0).to_numpy()

    def with_duckdb() -> np.ndarray:
        return np.asarray(con.sql(query).fetchnumpy()["s"], dtype=np.float64)

    def with_kernel() -> np.ndarray:
        return window_mean_std(close, window, 0)[1]

    print(f"\n{window}-bar rolling mean + population std over {close.size:,} real 1m closes:")
    for name, action in (("pandas rolling", with_pandas), ("duckdb window", with_duckdb), ("kernel", with_kernel)):
        std = action()[window - 1 :]
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.nanmax(np.where(exact_std > 0, np.abs(std - exact_std) / exact_std, np.abs(std)))
        print(f"  {name:15s} {timed(action, repeat) * 1000:8.1f} ms   max relative error {error:.1e}")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the real 1m bar file (default: shared/data)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    real = pd.read_parquet(args.data or default_data())
    build_features(real.iloc[:1_000], SPEC, AssetClass.CRYPTO)
    print(f"feature set {SPEC.hash()} ({len(SPEC.columns(AssetClass.CRYPTO))} columns, warm-up {SPEC.warmup} bars)")
    print(f"first call (compiled kernel load or compile): {time.perf_counter() - start:.2f} s")

    seconds = timed(lambda: build_features(real, SPEC, AssetClass.CRYPTO), args.repeat)
    print(f"real BTC/USDT 1m: {len(real):,} rows in {seconds:.3f} s ({len(real) / seconds:,.0f} rows/s)")

    symbols = [gbm_bars(MINUTES_PER_YEAR, 42 + k) for k in range(SYMBOLS)]
    runs = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for bars in symbols:
            build_features(bars, SPEC, AssetClass.CRYPTO)
        runs.append(time.perf_counter() - start)
    total = statistics.median(runs)
    rows = SYMBOLS * MINUTES_PER_YEAR
    print(
        f"{SYMBOLS} synthetic symbols x 1 year of 1m bars: {rows:,} rows in {total:.2f} s total "
        f"({rows / total:,.0f} rows/s; {total / SYMBOLS:.3f} s per symbol; runs {', '.join(f'{r:.2f}' for r in runs)})"
    )

    for window in WINDOWS:
        rolling_comparison(real["close"].to_numpy(), window, args.repeat)


if __name__ == "__main__":
    main()
