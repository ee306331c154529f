"""The bot's HTTP API reads the state the dashboard reads: status, trades, candles, equity, positions, breaker
events and commands, each bounded by ``limit``, with clear errors naming a bad parameter, and its OpenAPI docs.

The state is a real one (``tests.fakes.populated_state``: a paper runtime replayed over 30,000 real minute bars
with three sleeves, a lake of real bars); the API is a real uvicorn server read with httpx."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.catalog import read_bars
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.reports import api as queries
from pipeline.reports.api import MAX_SOURCE_ROWS, BadParameter, largest_limit
from pipeline.settings import Settings
from pipeline.state import PORTFOLIO, StateStore
from tests.fakes.populated_state import FEED, Populated, build
from tests.runtime.api_helpers import M1, ApiServer, api_settings, minutes, serving

NOW = pd.Timestamp("2030-01-02 03:04:05", tz="UTC")


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return build(tmp_path_factory.mktemp("populated"))


@pytest.fixture(scope="module")
def api(populated: Populated) -> Iterator[ApiServer]:
    with serving(populated.settings, clock=FixedClock(NOW)) as server:
        yield server


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


@pytest.fixture
def store(populated: Populated) -> Iterator[StateStore]:
    opened = StateStore.read_only(populated.settings.state_url)
    yield opened
    opened.close()


def _z(stamp: Any) -> str:
    return pd.Timestamp(stamp).isoformat().replace("+00:00", "Z")


def _problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str)
    return detail


def test_status_shows_the_runtime_its_sleeves_breakers_and_heartbeat_age(http: httpx.Client,
                                                                       store: StateStore) -> None:
    status = http.get("/api/status").json()
    state = store.bot_state()
    assert state is not None and state.heartbeat_at is not None
    ledgers = store.ledgers()
    assert (status["mode"], status["status"], status["reason"]) == ("paper", "stopped", "end of data")
    assert status["heartbeat_at"] == _z(state.heartbeat_at)
    assert status["heartbeat_age_s"] == (NOW.to_pydatetime() - state.heartbeat_at).total_seconds()
    assert Decimal(status["equity"]) == ledgers[PORTFOLIO].equity
    assert status["last_mark"] == _z(store.equity(PORTFOLIO)[-1].at)
    assert status["feeds"] == [{"feed": FEED, "last_bar": _z(store.cursor(FEED))}]
    assert status["last_reconcile"] is None  # this runtime never reconciled with a venue
    sleeves = {s["sleeve"]: s for s in status["sleeves"]}
    assert set(sleeves) == set(ledgers) - {PORTFOLIO} == {"trend:BTC/USDT", "reversion:BTC/USDT", "ml:BTC/USDT"}
    for name, sleeve in sleeves.items():
        ledger = ledgers[name]
        tripped = [rule for rule in ledger.tripped.split(",") if rule]
        assert (Decimal(sleeve["equity"]), Decimal(sleeve["cash"]), Decimal(sleeve["units"])) == (
            ledger.equity, ledger.cash, ledger.units)
        assert sleeve["breakers"] == [rule for rule in tripped if rule != "paused"]
        assert sleeve["paused"] is ("paused" in tripped)
        assert sleeve["bars_seen"] == ledger.bars_seen
    assert any(s["breakers"] for s in sleeves.values())  # the run left a breaker latched: shown per sleeve


def test_trades_are_the_newest_first_and_bounded(http: httpx.Client, store: StateStore) -> None:
    everything = sorted(store.trades(), key=lambda t: t.exit_time, reverse=True)
    assert len(everything) > 50
    answer = http.get("/api/trades", params={"limit": 7}).json()
    assert len(answer) == 7
    assert [(t["sleeve"], t["exit_time"], Decimal(t["pnl"])) for t in answer] == [
        (t.sleeve, _z(t.exit_time), t.pnl) for t in everything[:7]]
    mine = http.get("/api/trades", params={"sleeve": "trend:BTC/USDT", "symbol": "btc/usdt"}).json()
    expected = [t for t in everything if t.sleeve == "trend:BTC/USDT"][:100]
    assert [(t["exit_time"], Decimal(t["fees"])) for t in mine] == [(_z(t.exit_time), t.fees) for t in expected]
    assert len(http.get("/api/trades").json()) == 100  # the default bound
    too_many = http.get("/api/trades", params={"limit": 100_000})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    assert _problem(http.get("/api/trades", params={"symbol": "BTC USDT"}), 400).startswith("symbol ")


def test_candles_default_to_the_series_the_runtime_trades(http: httpx.Client, populated: Populated) -> None:
    answer = http.get("/api/candles", params={"limit": 30}).json()
    assert (answer["venue"], answer["symbol"], answer["timeframe"]) == ("binance", "BTC/USDT", "1m")
    tail = populated.bars.iloc[-30:]
    assert [b["timestamp"] for b in answer["bars"]] == [_z(t) for t in tail["timestamp"]]
    assert [b["close"] for b in answer["bars"]] == tail["close"].tolist()
    assert len(http.get("/api/candles").json()["bars"]) == 500
    named = http.get("/api/candles", params={"symbol": "btc/usdt", "limit": 5}).json()
    assert (named["venue"], named["timeframe"]) == ("binance", "1m")  # its timeframe is the runtime's


def test_candles_of_another_timeframe_are_resampled_as_the_chart_reads_them(http: httpx.Client,
                                                                          populated: Populated) -> None:
    answer = http.get("/api/candles", params={"symbol": "BTC/USDT", "timeframe": "15m", "limit": 12}).json()
    assert (answer["timeframe"], answer["stored_timeframe"]) == ("15m", "1m")
    expected = read_bars(populated.settings, "BTC/USDT", "15m", venue="binance").iloc[-12:]
    assert [(b["timestamp"], b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in answer["bars"]] == [
        (_z(r.timestamp), r.open, r.high, r.low, r.close, r.volume) for r in expected.itertuples()]
    hours = http.get("/api/candles", params={"symbol": "BTC/USDT", "timeframe": "1h", "limit": 5}).json()
    assert hours["stored_timeframe"] == "1h"  # a stored series of that timeframe is read as it is
    stored = read_bars(populated.settings, "BTC/USDT", "1h", venue="binance").iloc[-5:]
    assert [b["close"] for b in hours["bars"]] == stored["close"].tolist()


@pytest.mark.parametrize(("params", "status", "named"), [
    ({"timeframe": "7x"}, 400, "timeframe"),
    ({"symbol": "ETH/USDT"}, 400, "symbol"),
    ({"symbol": "not a symbol"}, 400, "symbol"),
    ({"symbol": "BTC/USDT", "venue": "kraken"}, 400, "symbol"),
    ({"symbol": "BTC/USDT", "timeframe": "90s"}, 400, "timeframe"),
    ({"limit": 0}, 422, "limit"),
    ({"limit": "many"}, 422, "limit"),
])
def test_bad_candle_parameters_are_named(http: httpx.Client, params: dict[str, Any], status: int,
                                         named: str) -> None:
    answer = http.get("/api/candles", params=params)
    if status == 422:
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", named]
    else:
        assert _problem(answer, status).startswith(named)


def _minute_lake(root: Path, rows: int) -> Settings:
    """Settings over a lake holding only real BTC/USDT 1m bars (``rows`` of them), and no runtime state."""
    settings = api_settings(root)
    bars = minutes(rows)
    path = root / "bars.parquet"
    bars.to_parquet(path)
    clock = FixedClock(bars["timestamp"].iloc[-1] + pd.Timedelta(hours=1))
    ingest(FileSource(path, clock, "binance"), "BTC/USDT", M1, settings, clock)
    return settings


def test_a_resampled_candle_request_reads_a_bounded_number_of_stored_bars(tmp_path: Path) -> None:
    settings = _minute_lake(tmp_path, 4000)
    assert (largest_limit(1440), largest_limit(240), largest_limit(1)) == (137, 832, MAX_SOURCE_ROWS)
    with serving(settings) as api, api.client() as http:
        for timeframe, most in (("1d", 137), ("4h", 832)):
            for limit in (5000, most + 1):
                detail = _problem(http.get("/api/candles", params={"symbol": "BTC/USDT", "timeframe": timeframe,
                                                                   "limit": limit}), 400)
                assert detail.startswith(f"limit {limit} is too large for timeframe {timeframe} resampled from 1m")
                assert f"give limit at most {most} for timeframe {timeframe}" in detail
            largest = http.get("/api/candles", params={"symbol": "BTC/USDT", "timeframe": timeframe, "limit": most})
            assert largest.status_code == 200, largest.text
            default = http.get("/api/candles", params={"symbol": "BTC/USDT", "timeframe": timeframe}).json()
            expected = read_bars(settings, "BTC/USDT", timeframe, venue="binance")
            for answer in (largest.json(), default):  # without a limit: the most the timeframe allows
                assert (answer["timeframe"], answer["stored_timeframe"]) == (timeframe, "1m")
                assert [(b["timestamp"], b["close"]) for b in answer["bars"]] == [
                    (_z(r.timestamp), r.close) for r in expected.iloc[-most:].itertuples()]
        stored = http.get("/api/candles", params={"symbol": "BTC/USDT", "limit": 5000}).json()
        assert len(stored["bars"]) == 4000 and stored["stored_timeframe"] == "1m"  # a stored series: the API's bound
    with pytest.raises(BadParameter, match=f"give limit at most {MAX_SOURCE_ROWS} for timeframe 1m") as refused:
        queries.candles(settings, "BTC/USDT", M1, MAX_SOURCE_ROWS + 1)
    assert refused.value.parameter == "limit"


@pytest.mark.parametrize(("path", "portfolio"), [("/api/equity", True), ("/api/trades", False),
                                                 ("/api/breakers", True)])
def test_an_unknown_sleeve_is_refused_naming_the_runtimes_sleeves(http: httpx.Client, path: str,
                                                                  portfolio: bool) -> None:
    sleeves = sorted(["trend:BTC/USDT", "reversion:BTC/USDT", "ml:BTC/USDT"])
    for unknown in ("nope:BTC/USDT", "trend", "TREND:BTC/USDT", *([] if portfolio else [PORTFOLIO])):
        detail = _problem(http.get(path, params={"sleeve": unknown}), 400)
        assert detail.startswith(f"sleeve: {unknown!r} is not a sleeve of the runtime: use one of ")
        assert str([*sleeves, *([PORTFOLIO] if portfolio else [])]) in detail
    for known in [*sleeves, *([PORTFOLIO] if portfolio else [])]:
        assert http.get(path, params={"sleeve": known}).status_code == 200, (path, known)


def test_equity_positions_and_breakers_are_the_stored_ones_bounded(http: httpx.Client, store: StateStore) -> None:
    marks = store.equity(PORTFOLIO)
    curve = http.get("/api/equity", params={"limit": 3}).json()
    assert curve["sleeve"] == PORTFOLIO
    assert [(p["at"], Decimal(p["equity"]), Decimal(p["cash"])) for p in curve["points"]] == [
        (_z(m.at), m.equity, m.cash) for m in marks[-3:]]
    sleeve = http.get("/api/equity", params={"sleeve": "ml:BTC/USDT"}).json()["points"]
    assert [Decimal(p["equity"]) for p in sleeve] == [m.equity for m in store.equity("ml:BTC/USDT")][-500:]

    held = [p for p in store.positions() if p.qty != 0]
    assert held  # the replay ended holding a position
    positions = http.get("/api/positions").json()
    assert [(p["sleeve"], p["symbol"], Decimal(p["qty"])) for p in positions] == [
        (p.sleeve, p.symbol, p.qty) for p in held]
    every = http.get("/api/positions", params={"include_flat": True}).json()
    assert len(every) == len(store.positions()) > len(held)

    events = sorted(store.breaker_events(), key=lambda e: e.at, reverse=True)
    assert len(events) > 3
    breakers = http.get("/api/breakers", params={"limit": 3}).json()
    assert [(b["sleeve"], b["rule"], b["action"], b["at"]) for b in breakers] == [
        (e.sleeve, e.rule, e.action, _z(e.at)) for e in events[:3]]
    ml = http.get("/api/breakers", params={"sleeve": "ml:BTC/USDT"}).json()
    assert ml and {b["sleeve"] for b in ml} == {"ml:BTC/USDT"}
    for path in ("/api/equity", "/api/positions", "/api/breakers", "/api/commands"):
        assert http.get(path, params={"limit": 0}).status_code == 422


def test_commands_show_their_acknowledgement(http: httpx.Client, populated: Populated) -> None:
    pending = http.get(f"/api/commands/{populated.pending_command_id}").json()
    assert (pending["command"], pending["source"], pending["state"], pending["result"]) == (
        "pause", "telegram", "pending", None)
    done = http.get(f"/api/commands/{populated.pending_command_id - 1}").json()
    assert (done["command"], done["state"], done["result"]) == ("resume", "acknowledged", "resumed")
    assert done["acknowledged_at"] is not None
    assert [c["id"] for c in http.get("/api/commands").json()] == [populated.pending_command_id,
                                                                   populated.pending_command_id - 1]
    assert _problem(http.get("/api/commands/999"), 404).startswith("command_id")


def test_the_latest_reconciliation_is_shown(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    store = StateStore(settings.state_url)
    store.set_status("running", "started", mode="paper")
    store.record_event("reconcile", "ok: 2 open orders, holdings and cash agree", at=NOW.to_pydatetime())
    latest = store.record_event("reconcile", "mismatch: cash 10.00 USDT above the ledgers; sleeves paused",
                                at=(NOW + pd.Timedelta(minutes=1)).to_pydatetime())
    store.record_event("stale", "no bar for 3 bars", at=(NOW + pd.Timedelta(minutes=2)).to_pydatetime())
    store.close()
    with serving(settings) as api, api.client() as http:
        shown = http.get("/api/status").json()["last_reconcile"]
    assert shown == {"id": latest, "at": _z(NOW + pd.Timedelta(minutes=1)), "kind": "reconcile", "sleeve": None,
                     "detail": "mismatch: cash 10.00 USDT above the ledgers; sleeves paused"}


def test_the_docs_and_the_openapi_schema_answer(http: httpx.Client) -> None:
    docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = http.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/status", "/api/trades", "/api/candles", "/api/equity", "/api/positions", "/api/breakers",
            "/api/pause", "/api/resume", "/api/flatten", "/api/reset-breaker", "/api/stop",
            "/api/commands/{command_id}", "/api/commands"} == paths
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["token"][
            "description"]}
    status = schema["paths"]["/api/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert status == {"$ref": "#/components/schemas/Status"}
