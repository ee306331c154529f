"""The feature store: ``build_features`` results filed under their feature set's hash, and the spec check.

Layout under ``<data_dir>/features``::

    <spec_hash>/spec.json                                   the spec (canonical JSON)
    <spec_hash>/<venue>/<SYMBOL-KEY>/<timeframe>.parquet    timestamp + the feature columns

Files are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.lake import atomic_write_bytes, atomic_write_table
from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError, Timeframe
from pipeline.features.spec import FeatureSpec

FEATURES_DIR = "features"
SPEC_FILE = "spec.json"
_VENUE_RE = re.compile(r"^[a-z0-9_]{1,40}$")
_KEY_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,62}$")


def features_path(spec: FeatureSpec, data_dir: Path, venue: str, symbol_key: str, timeframe: str) -> Path:
    """``<data_dir>/features/<spec_hash>/<venue>/<symbol_key>/<timeframe>.parquet`` (names are checked)."""
    if not _VENUE_RE.match(venue):
        raise DataError(f"venue {venue!r} is not valid: use lower-case letters, digits and underscores")
    if not _KEY_RE.match(symbol_key):
        raise DataError(f"symbol key {symbol_key!r} is not valid: use the file-system form such as BTC-USDT or AAPL")
    if str(Timeframe.parse(timeframe)) != timeframe:
        raise DataError(f"timeframe {timeframe!r} is not in canonical form (e.g. 1m, 5m, 1h, 1d)")
    return data_dir / FEATURES_DIR / spec.hash() / venue / symbol_key / f"{timeframe}.parquet"


def _check_columns(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    got = list(frame.columns)
    allowed = [["timestamp", *spec.columns(a)] for a in AssetClass]
    if got not in allowed:
        raise DataError(
            f"feature frame columns {got} do not match feature set {spec.hash()}; "
            f"expected {allowed[0]} (plus 'gap' for stocks)"
        )


def store_features(
    frame: pd.DataFrame, spec: FeatureSpec, data_dir: Path, venue: str, symbol_key: str, timeframe: str
) -> Path:
    """Write ``frame`` (a ``build_features`` result of ``spec``) to the store, atomically; return its path.

    Also writes ``<spec_hash>/spec.json``. Replaces an earlier file of the same series and spec.
    """
    path = features_path(spec, data_dir, venue, symbol_key, timeframe)
    _check_columns(frame, spec)
    spec_path = path.parents[2] / SPEC_FILE
    _check_stored_spec(spec_path, spec)
    atomic_write_bytes(spec_path, spec.canonical_json().encode())
    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write_table(path, table.replace_schema_metadata(None))
    return path


def load_features(spec: FeatureSpec, data_dir: Path, venue: str, symbol_key: str, timeframe: str) -> pd.DataFrame:
    """The stored features of one series for ``spec``; ``DataError`` naming what is missing."""
    path = features_path(spec, data_dir, venue, symbol_key, timeframe)
    spec_path = path.parents[2] / SPEC_FILE
    if not spec_path.exists():
        raise DataError(f"feature set {spec.hash()} is not in the store ({spec_path} is missing); build it first")
    _check_stored_spec(spec_path, spec)
    if not path.exists():
        raise DataError(
            f"no features of set {spec.hash()} for {venue} {symbol_key} {timeframe} ({path} is missing); "
            "build them first"
        )
    frame: pd.DataFrame = pq.read_table(path).to_pandas()
    frame["timestamp"] = frame["timestamp"].astype(TIMESTAMP_DTYPE)
    _check_columns(frame, spec)
    return frame


def _check_stored_spec(spec_path: Path, spec: FeatureSpec) -> None:
    if spec_path.exists() and spec_path.read_text() != spec.canonical_json():
        raise DataError(f"{spec_path} does not hold feature set {spec.hash()}; the store is inconsistent")


def check_spec(expected_hash: str, spec: FeatureSpec) -> None:
    """Refuse features built with a different spec than the one a model was trained on."""
    got = spec.hash()
    if got != expected_hash:
        raise DataError(
            f"feature spec {got} differs from the model's {expected_hash}: "
            "build the features with the model's spec, or retrain the model on this one"
        )
