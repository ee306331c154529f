"""The lake writes only into a folder of its own: a lake folder holding files tradeforge did not write is refused
by name and left byte-for-byte as it was; the lake's own folder (hidden leftovers included) takes new bars."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.ingest import ingest
from pipeline.data.lake import Lake
from pipeline.data.sources.sample import SampleSource
from pipeline.domain import DataError, Timeframe
from pipeline.settings import Settings
from tests.conftest import lake_fingerprint

H1 = Timeframe.parse("1h")
SINCE = pd.Timestamp("2026-11-10", tz="UTC")

FOREIGN = [
    pytest.param({"holiday.jpg": b"\xff\xd8 a photo", "thesis/chapter1.tex": b"\\section{}"},
                 "holiday.jpg, thesis/chapter1.tex", id="someone-elses-folder"),
    pytest.param({"sample/ETH-USDT/1h/_series.json": b"{}", "sample/ETH-USDT/1h/notes.txt": b"mine"},
                 "sample/ETH-USDT/1h/notes.txt", id="a-foreign-file-in-a-series-folder"),
    pytest.param({"binance/prices.csv": b"timestamp,close\n"}, "binance/prices.csv", id="a-file-above-the-series"),
    pytest.param({"binance/BTC-USDT/1h/2024-01/extra.parquet": b"PAR1"}, "binance/BTC-USDT/1h/2024-01/extra.parquet",
                 id="a-folder-inside-a-series"),
]


@pytest.mark.parametrize(("files", "named"), FOREIGN)
def test_a_lake_folder_holding_files_that_are_not_ours_is_refused_untouched(
        settings: Settings, clock: FixedClock, files: dict[str, bytes], named: str) -> None:
    for name, content in files.items():
        path = settings.lake_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    before = lake_fingerprint(settings.lake_dir)

    with pytest.raises(DataError) as refused:
        ingest(SampleSource(clock, seed=1), "BTC/USDT", H1, settings, clock, since=SINCE)

    message = str(refused.value)
    assert f"the lake folder {settings.lake_dir} holds files tradeforge did not write ({named})" in message
    assert "nothing was written" in message
    assert lake_fingerprint(settings.lake_dir) == before
    assert sorted(p.relative_to(settings.lake_dir).as_posix() for p in settings.lake_dir.rglob("*") if p.is_file()) \
        == sorted(files)


def test_a_lake_path_that_is_a_file_is_refused(settings: Settings, clock: FixedClock) -> None:
    settings.data_dir.mkdir(parents=True)
    settings.lake_dir.write_text("my shopping list\n")

    with pytest.raises(DataError, match="is a file, not a folder"):
        ingest(SampleSource(clock, seed=1), "BTC/USDT", H1, settings, clock, since=SINCE)

    assert settings.lake_dir.read_text() == "my shopping list\n"


def test_the_lakes_own_folder_takes_new_bars_hidden_leftovers_and_all(settings: Settings, clock: FixedClock) -> None:
    first = ingest(SampleSource(clock, seed=1), "BTC/USDT", H1, settings, clock, since=SINCE)
    folder = settings.lake_dir / "sample" / "BTC-USDT" / "1h"
    (folder / ".2026-11.parquet.0a1b.tmp").write_bytes(b"an interrupted write")
    (settings.lake_dir / ".DS_Store").write_bytes(b"\x00")
    assert Lake(settings.lake_dir).foreign_files() == []

    second = ingest(SampleSource(clock, seed=1), "ETH/USDT", H1, settings, clock, since=SINCE)

    assert first.rows_written > 0 and second.rows_written > 0
    assert (settings.lake_dir / "sample" / "ETH-USDT" / "1h" / "_series.json").is_file()
