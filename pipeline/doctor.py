"""Checks of the install and the configuration, each with what to do when it fails.

The stores are read without changing them: the state database, the lake folder and the MLflow store each fail
their check when they are not tradeforge's (another application's database or files, a file that is not a
database), by the same rules the stores apply before writing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from pipeline.data.lake import Lake
from pipeline.domain import DataError
from pipeline.settings import Settings


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in a stable order."""
    return [
        _python(),
        *_packages(),
        _writable_dir("data dir", settings.data_dir, "set TRADEFORGE_DATA_DIR to a writable folder"),
        _lake(settings),
        _state_db(settings),
        _mlflow_store(settings),
        _prefect_home(),
        _telemetry(),
        _secrets(settings),
    ]


def _python() -> Check:
    return Check("python", Status.OK, f"{sys.version.split()[0]} at {sys.executable}")


def _packages() -> list[Check]:
    try:
        requirements = metadata.requires("tradeforge") or []
    except metadata.PackageNotFoundError:
        return [Check("packages", Status.FAIL, "tradeforge is not installed", "run: make install")]
    wrong: list[str] = []
    checked = 0
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        checked += 1
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{req.name} missing")
            continue
        if req.specifier and installed not in req.specifier:
            wrong.append(f"{req.name} {installed} (wants {req.specifier})")
    if wrong:
        return [Check("packages", Status.FAIL, "; ".join(wrong), "run: make install (or pip install -e '.[dev]')")]
    return [Check("packages", Status.OK, f"{checked} pinned dependencies at their pinned versions")]


def _writable_dir(name: str, folder: Path, fix: str) -> Check:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(name, Status.FAIL, f"{folder}: {exc}", fix)
    return Check(name, Status.OK, str(folder.resolve()))


def _lake(settings: Settings) -> Check:
    lake = Lake(settings.lake_dir)
    try:
        lake.claim()
    except DataError as exc:
        return Check("lake", Status.FAIL, str(exc), "move the files out of the lake folder, or set "
                     "TRADEFORGE_DATA_DIR to a folder of tradeforge's own")
    try:
        series = lake.series()
    except (OSError, ValueError, KeyError) as exc:
        return Check("lake", Status.FAIL, f"{settings.lake_dir}: {exc}", "inspect or move the damaged series folder")
    samples = sum(1 for s in series if s.sample)
    if not series:
        fix = "run: tradeforge ingest --source sample --symbol BTC/USDT --timeframe 1h"
        return Check("lake", Status.WARN, "empty", fix)
    return Check("lake", Status.OK, f"{len(series)} series ({samples} sample)")


def _state_db(settings: Settings) -> Check:
    from pipeline.state import StateError
    from pipeline.state.schema import inspect_state

    url = settings.state_url
    shown = _redact(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        shown = f"SQLite {path}"
        check = _writable_dir("state db", path.parent, "set TRADEFORGE_DATABASE_URL or TRADEFORGE_DATA_DIR")
        if check.status is not Status.OK:
            return check
    try:
        version = inspect_state(url, _redact(url), connect_timeout_s=3)  # reads only: nothing created or changed
    except StateError as exc:
        fix = "point TRADEFORGE_DATABASE_URL (or TRADEFORGE_DATA_DIR) at tradeforge's state or a new database"
        return Check("state db", Status.FAIL, str(exc), fix)
    except Exception as exc:  # any driver error is the answer of this check
        return Check("state db", Status.FAIL, f"{_redact(url)}: {type(exc).__name__}", "check TRADEFORGE_DATABASE_URL")
    return Check("state db", Status.OK, shown + ("" if version is None else f" (schema version {version})"))


def _mlflow_store(settings: Settings) -> Check:
    uri = settings.mlflow_tracking_uri
    shown = _redact(uri)
    if uri.startswith("sqlite:///"):
        from pipeline.models.tracking_store import check_tracking_store, tracking_file

        store = tracking_file(uri)
        assert store is not None
        check = _writable_dir("mlflow store", store.parent, "set TRADEFORGE_MLFLOW_TRACKING_URI")
        if check.status is not Status.OK:
            return check
        try:
            check_tracking_store(uri)
        except DataError as exc:
            return Check("mlflow store", Status.FAIL, str(exc), "set TRADEFORGE_MLFLOW_TRACKING_URI to an MLflow "
                         "store or a new file")
        return Check("mlflow store", Status.OK, shown)
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=3) as response:  # noqa: S310 - http(s) only, checked above
                ok = response.status == 200
        except OSError as exc:
            fix = "start the MLflow server or fix TRADEFORGE_MLFLOW_TRACKING_URI"
            return Check("mlflow store", Status.FAIL, f"{shown}: {type(exc).__name__}", fix)
        return Check("mlflow store", Status.OK if ok else Status.FAIL, shown)
    return Check("mlflow store", Status.WARN, shown, "use sqlite:///… or an http(s) tracking server")


def _prefect_home() -> Check:
    home = os.environ.get("PREFECT_HOME")
    if not home:
        return Check(
            "prefect home",
            Status.WARN,
            "PREFECT_HOME is not set (Prefect would use ~/.prefect)",
            "run through make, or export PREFECT_HOME=$PWD/.prefect",
        )
    return _writable_dir("prefect home", Path(home), "point PREFECT_HOME at a writable folder")


def _telemetry() -> Check:
    expected = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    off = [k for k, v in expected.items() if os.environ.get(k, "").lower() != v]
    if off:
        return Check("telemetry", Status.WARN, f"not disabled: {', '.join(off)}", "run through make (it sets them)")
    return Check("telemetry", Status.OK, "disabled")


def _secrets(settings: Settings) -> Check:
    present = [
        name
        for name, value in (
            ("ccxt", settings.ccxt_api_key),
            ("alpaca", settings.alpaca_api_key),
        )
        if value is not None and value.get_secret_value()
    ]
    detail = f"keys set for: {', '.join(present)}" if present else "no venue keys (sample and public data only)"
    return Check("venue keys", Status.OK, detail)


def _redact(url: str) -> str:
    """A database URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
