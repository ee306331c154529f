"""Ingest benchmark: import the real BTC/USDT 1m file into a fresh lake, then aggregate it to daily OHLC.

Prints rows/s of the full ingest path (read, quality gate, partitioned atomic write, health refresh), the time
of an idempotent re-import, and the time of a DuckDB daily-OHLC aggregation over the stored bars.

    python bench/ingest.py [--data ../shared/data/binance_BTC-USDT_1m.parquet] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.clock import FixedClock  # noqa: E402
from pipeline.data.catalog import open_duckdb  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.data.sources.files import FileSource  # noqa: E402
from pipeline.domain import Timeframe  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

DAILY_OHLC = """
select date_trunc('day', timezone('UTC', timestamp)) as day,
       arg_min(open, timestamp) as open, max(high) as high, min(low) as low,
       arg_max(close, timestamp) as close, sum(volume) as volume
from bars where venue = 'binance' and symbol = 'BTC/USDT' and timeframe = '1m'
group by 1 order by 1
"""


def default_data() -> Path:
    for parent in REPO.parents:
        candidate = parent / "shared" / "data" / "binance_BTC-USDT_1m.parquet"
        if candidate.exists():
            return candidate
    return Path("/work/shared/data/binance_BTC-USDT_1m.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    clock = FixedClock("2026-11-21")
    timeframe = Timeframe.parse("1m")
    ingest_seconds: list[float] = []
    reimport_seconds: list[float] = []
    query_seconds: list[float] = []
    rows = days = 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(data_dir=Path(folder), _env_file=None)  # type: ignore[call-arg]
            source = FileSource(args.data, clock, "binance")
            started = time.perf_counter()
            report = ingest(source, "BTC/USDT", timeframe, settings, clock)
            ingest_seconds.append(time.perf_counter() - started)
            rows = report.rows_written
            started = time.perf_counter()
            again = ingest(source, "BTC/USDT", timeframe, settings, clock)
            reimport_seconds.append(time.perf_counter() - started)
            assert again.rows_written == 0
            con = open_duckdb(settings)
            con.execute(DAILY_OHLC).fetchall()  # warm the file cache once
            for _ in range(5):
                started = time.perf_counter()
                days = len(con.execute(DAILY_OHLC).fetchall())
                query_seconds.append(time.perf_counter() - started)
    best = min(ingest_seconds)
    print(f"file: {args.data.name} ({rows:,} rows)")
    print(f"ingest (read + quality gate + atomic partitioned write + health): "
          f"best {best:.2f} s = {rows / best:,.0f} rows/s; median {statistics.median(ingest_seconds):.2f} s")
    print(f"re-import (idempotent, 0 rows written): median {statistics.median(reimport_seconds):.2f} s")
    print(f"DuckDB daily OHLC over {rows:,} bars -> {days:,} days: median "
          f"{statistics.median(query_seconds) * 1000:.1f} ms, best {min(query_seconds) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
