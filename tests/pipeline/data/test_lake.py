"""The lake: layout, incremental and idempotent writes, conflicts, crash safety, DuckDB views."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.clock import FixedClock
from pipeline.data.catalog import open_duckdb, read_bars
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.data.sources.sample import SampleSource
from pipeline.domain import DataError, Timeframe, bars_equal
from pipeline.settings import Settings
from tests.conftest import REPO, lake_fingerprint, shared_file

H1 = Timeframe.parse("1h")


def _write_slice(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / name
    frame.to_parquet(path)
    return path


def test_layout_is_venue_symbol_timeframe_period(settings: Settings, clock: FixedClock, tmp_path: Path) -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:2000]
    ingest(FileSource(_write_slice(tmp_path, "a.parquet", bars), clock, "binance"), "BTC/USDT", H1, settings, clock)
    folder = settings.lake_dir / "binance" / "BTC-USDT" / "1h"
    assert sorted(p.name for p in folder.iterdir()) == [
        "2017-08.parquet", "2017-09.parquet", "2017-10.parquet", "2017-11.parquet", "_series.json"]
    daily = pd.read_parquet(shared_file("binance_BTC-USDT_1d.parquet")).iloc[:400]
    ingest(FileSource(_write_slice(tmp_path, "d.parquet", daily), clock, "binance"), "BTC/USDT",
           Timeframe.parse("1d"), settings, clock)
    assert sorted(p.name for p in (settings.lake_dir / "binance" / "BTC-USDT" / "1d").glob("*.parquet")) == [
        "2017.parquet", "2018.parquet"]


def test_incremental_ingest_appends_only_new_bars(settings: Settings, tmp_path: Path) -> None:
    real = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:3000]
    clock = FixedClock("2026-11-21")
    first = ingest(FileSource(_write_slice(tmp_path, "a.parquet", real.iloc[:2000]), clock, "binance"),
                   "BTC/USDT", H1, settings, clock)
    second = ingest(FileSource(_write_slice(tmp_path, "b.parquet", real.iloc[1500:]), clock, "binance"),
                    "BTC/USDT", H1, settings, clock)
    assert (first.rows_written, second.rows_written) == (2000, 1000)
    assert second.first == real["timestamp"].iloc[2000]
    assert bars_equal(read_bars(settings, "BTC/USDT", "1h"), real)


def test_sample_source_resumes_from_the_last_stored_bar(settings: Settings) -> None:
    clock = FixedClock("2024-03-01 00:30")
    source = SampleSource(clock, seed=3)
    first = ingest(source, "ETH/USDT", H1, settings, clock)
    assert first.last == pd.Timestamp("2024-02-29 23:00", tz="UTC")
    clock.set(pd.Timestamp("2024-03-01 05:10", tz="UTC"))
    second = ingest(source, "ETH/USDT", H1, settings, clock)
    assert second.rows_fetched == second.rows_written == 5
    assert second.first == pd.Timestamp("2024-03-01 00:00", tz="UTC")
    assert ingest(source, "ETH/USDT", H1, settings, clock).rows_written == 0
    stored = read_bars(settings, "ETH/USDT", "1h")
    regenerated = SampleSource(clock, seed=3).fetch(source.instrument("ETH/USDT"), H1, None)
    assert bars_equal(stored, regenerated)


def test_conflicting_bars_are_quarantined_and_stored_bars_kept(
    settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    real = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:500]
    ingest(FileSource(_write_slice(tmp_path, "a.parquet", real), clock, "binance"), "BTC/USDT", H1, settings, clock)
    before = lake_fingerprint(settings.lake_dir)
    altered = real.iloc[100:110].copy()
    altered[["open", "high", "low", "close"]] *= 1.01
    report = ingest(FileSource(_write_slice(tmp_path, "b.parquet", altered), clock, "binance"), "BTC/USDT", H1,
                    settings, clock)
    assert report.rows_written == 0
    assert report.quarantine_reasons == {"conflicts with stored bar": 10}
    assert lake_fingerprint(settings.lake_dir) == before
    assert bars_equal(read_bars(settings, "BTC/USDT", "1h"), real)


def test_sample_and_real_bars_never_share_a_series(settings: Settings, clock: FixedClock) -> None:
    ingest(SampleSource(clock, seed=1), "BTC/USDT", H1, settings, clock, since=pd.Timestamp("2026-11-01", tz="UTC"))
    stored = read_bars(settings, "BTC/USDT", "1h")
    assert len(stored) > 0
    con = open_duckdb(settings)
    assert con.execute("select distinct venue, sample from bars").fetchall() == [("sample", True)]
    assert con.execute("select sample from health").fetchall() == [(True,)]


def test_read_bars_names_what_is_missing(settings: Settings) -> None:
    with pytest.raises(DataError, match="'SOL/USDT' is not in the lake"):
        read_bars(settings, "SOL/USDT", "1h")


def test_duckdb_views_answer_queries_over_the_lake(settings: Settings, clock: FixedClock, tmp_path: Path) -> None:
    real = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))
    ingest(FileSource(_write_slice(tmp_path, "a.parquet", real), clock, "binance"), "BTC/USDT", H1, settings, clock)
    con = open_duckdb(settings)
    rows, first, last = con.execute("select count(*), min(timestamp), max(timestamp) from bars").fetchone() or ()
    assert rows == len(real)
    assert pd.Timestamp(first) == real["timestamp"].iloc[0]
    assert pd.Timestamp(last) == real["timestamp"].iloc[-1]
    daily = con.execute(
        """
        select date_trunc('day', timezone('UTC', timestamp)) as day, arg_min(open, timestamp) as open,
               max(high) as high, min(low) as low, arg_max(close, timestamp) as close, count(*) as n
        from bars where symbol = 'BTC/USDT' and timeframe = '1h' group by 1 having n = 24 order by 1
        """
    ).df()
    real_daily = pd.read_parquet(shared_file("binance_BTC-USDT_1d.parquet"))
    real_daily["day"] = real_daily["timestamp"].dt.tz_localize(None)
    joined = daily.merge(real_daily, on="day", suffixes=("", "_venue"))
    assert len(joined) > 3000
    assert (joined["close"] == joined["close_venue"]).mean() > 0.999
    health = con.execute("select symbol, timeframe, rows, gaps, missing_bars from health").fetchall()
    assert health == [("BTC/USDT", "1h", len(real), 28, 127)]


@pytest.mark.slow  # a drill: a real ingest killed with SIGKILL mid-write
def test_a_crash_in_the_middle_of_a_write_leaves_the_lake_readable(settings: Settings, tmp_path: Path) -> None:
    """Kill a real ingest process with SIGKILL while it is writing; no partial Parquet file may remain."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from pipeline.clock import FixedClock
        from pipeline.domain import Timeframe
        from pipeline.data.ingest import ingest
        from pipeline.settings import Settings
        from pipeline.data.sources.files import FileSource
        clock = FixedClock("2026-11-21")
        settings = Settings(data_dir=Path({str(settings.data_dir)!r}), _env_file=None)
        source = FileSource(Path({str(shared_file("binance_BTC-USDT_1m.parquet"))!r}), clock, "binance")
        ingest(source, "BTC/USDT", Timeframe.parse("1m"), settings, clock)
        """
    )
    folder = settings.lake_dir / "binance" / "BTC-USDT" / "1m"
    caught = False
    for _attempt in range(6):
        process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
        while process.poll() is None:  # watch for the temporary file of a write in progress
            if folder.exists() and any(name.endswith(".tmp") for name in os.listdir(folder)):
                process.send_signal(signal.SIGKILL)
                caught = True
                break
            time.sleep(0.0005)
        process.wait()
        if caught:
            break
    assert caught, "the ingest finished every time before a write could be interrupted"
    for path in folder.glob("*.parquet"):
        table = pq.read_table(path)
        assert table.num_rows > 0
    con = open_duckdb(settings)
    partial_rows = con.execute("select count(*) from bars").fetchone()
    assert partial_rows is not None
    # The next ingest completes the series; the result equals the source exactly.
    clock = FixedClock("2026-11-21")
    ingest(FileSource(shared_file("binance_BTC-USDT_1m.parquet"), clock, "binance"), "BTC/USDT",
           Timeframe.parse("1m"), settings, clock)
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
    original = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"))
    assert bars_equal(read_bars(settings, "BTC/USDT", "1m"), original)
