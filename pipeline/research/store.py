"""Where a study's report is kept: ``<data_dir>/research/<study>/`` holds ``report.json`` (the report without its
tables), ``trials.parquet`` (one row per finished trial: number, value, parameters, ``m_*`` metrics) and, with
walk-forward, ``out_of_sample.parquet`` (the stitched out-of-sample equity curve). Each file is written
atomically; a study run again replaces its own files only. ``load_reports`` lists what is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.data.lake import atomic_write_bytes, atomic_write_table

REPORT = "report.json"
TRIALS = "trials.parquet"
OUT_OF_SAMPLE = "out_of_sample.parquet"


def folder_of(root: Path, study: str) -> Path:
    """The folder of study ``study`` under ``root`` (a study name's slashes become ``__``)."""
    return root / study.replace("/", "__")


def document(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its tables: what ``--json`` prints and ``report.json`` holds."""
    found = {key: value for key, value in report.items() if key != "table"}
    if "walk_forward" in found:
        found["walk_forward"] = {key: value for key, value in found["walk_forward"].items() if key != "equity"}
    return found


def save_report(report: dict[str, Any], root: Path) -> Path:
    """Keep ``report`` under ``root/<study>/`` (see the module documentation); returns the folder."""
    folder = folder_of(root, str(report["study"]))
    table = pd.DataFrame(report.get("table", []))
    atomic_write_table(folder / TRIALS, pa.Table.from_pandas(table, preserve_index=False))
    walk = report.get("walk_forward")
    if walk is not None:
        atomic_write_table(folder / OUT_OF_SAMPLE, pa.Table.from_pandas(walk["equity"], preserve_index=False))
    else:  # the study run again without walk-forward: an earlier run's curve is not this report's
        (folder / OUT_OF_SAMPLE).unlink(missing_ok=True)
    atomic_write_bytes(folder / REPORT, json.dumps(document(report), indent=2, default=str).encode())
    return folder


def load_reports(root: Path) -> list[dict[str, Any]]:
    """Every kept report under ``root``, newest first, each with its ``folder``."""
    found = []
    for path in root.glob(f"*/{REPORT}"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict):
            continue
        found.append({**report, "folder": str(path.parent), "saved": path.stat().st_mtime})
    return sorted(found, key=lambda r: r["saved"], reverse=True)
