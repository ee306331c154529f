"""The bot's HTTP API with a running runtime: the websocket pushes each fill, breaker event and heartbeat before
the runtime takes its next bar, and a control POST is a command the runtime applies and acknowledges.

The runtime is a real paper node on replayed minute bars, in a thread, stepped one bar at a time
(``tests.runtime.api_helpers.GatedRuntime``); the API is a real uvicorn server, its clients httpx and
websockets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.state import StateStore
from tests.runtime.api_helpers import TOKEN, GatedRuntime, api_settings, minutes, receive_until, serving

Messages = list[dict[str, Any]]


def _of(kind: str, received: Messages) -> Messages:
    return [m for m in received if m["type"] == kind]


def test_the_websocket_pushes_every_fill_breaker_and_heartbeat_within_one_runtime_loop(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, TOKEN)
    runtime = GatedRuntime(settings, minutes(600)).start()
    store = StateStore.read_only(settings.state_url)
    received: Messages = []
    try:
        with serving(settings) as api, api.websocket(token=TOKEN) as ws:
            hello = receive_until(ws, lambda r: len(r) == 1, received)[0]
            assert hello == {"type": "hello", "heartbeat_at": None, "status": "running"}
            bars = 0
            while runtime.running and not (len(_of("fill", received)) >= 6 and _of("breaker", received)):
                runtime.step()
                bars += 1
                fills = [f.fill_id for f in store.fills()]
                breakers = [(e.sleeve, e.rule, e.action, e.at) for e in store.breaker_events()]
                state = store.bot_state()
                assert state is not None and state.heartbeat_at is not None
                beat = state.heartbeat_at.isoformat().replace("+00:00", "Z")

                def caught_up(r: Messages, fills: list[str] = fills, breakers: list[Any] = breakers,
                              beat: str = beat) -> bool:
                    return ([m["fill_id"] for m in _of("fill", r)] == fills
                            and [(m["sleeve"], m["rule"], m["action"], m["at"]) for m in _of("breaker", r)]
                            == [(s, rule, a, at.isoformat().replace("+00:00", "Z")) for s, rule, a, at in breakers]
                            and r[-1] == {"type": "heartbeat", "at": beat, "status": "running", "mode": "paper"})

                receive_until(ws, caught_up, received)  # before the runtime may take its next bar
    finally:
        runtime.finish()
    pushed, tripped = _of("fill", received), _of("breaker", received)
    assert len(pushed) >= 6 and tripped, f"after {bars} bars: {len(pushed)} fills, {len(tripped)} breaker events"
    assert bars < 600  # the loop ended because the runtime booked them, not because the data ran out
    stored = {f.fill_id: f for f in store.fills()}
    for message in pushed:  # each message is the stored fill, money exact
        fill = stored[message["fill_id"]]
        assert (message["sleeve"], message["symbol"], message["side"], message["reason"]) == (
            fill.sleeve, fill.symbol, fill.side, fill.reason)
        assert (Decimal(message["qty"]), Decimal(message["price"]), Decimal(message["fee"])) == (
            fill.qty, fill.price, fill.fee)
    assert [m["id"] for m in pushed] == sorted(m["id"] for m in pushed)
    assert {m["sleeve"] for m in tripped} <= {"fast:BTC/USDT", "trend:BTC/USDT", "portfolio"}
    assert len(_of("heartbeat", received)) == bars  # the heartbeat moves with every bar committed
    store.close()


def test_a_control_post_is_a_command_the_running_runtime_applies_and_acknowledges(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, TOKEN)
    runtime = GatedRuntime(settings, minutes(300)).start()
    store = StateStore.read_only(settings.state_url)
    try:
        runtime.step()
        with serving(settings) as api, api.client(TOKEN) as http:
            pause = http.post("/api/pause", json={"sleeve": "fast:BTC/USDT"})
            assert pause.status_code == 202, pause.text
            queued = pause.json()
            assert (queued["command"], queued["sleeve"], queued["state"], queued["source"]) == (
                "pause", "fast:BTC/USDT", "pending", "api")
            pending = store.pending_commands()  # the same control command the dashboard and Telegram write
            assert [(c.id, c.command, c.sleeve) for c in pending] == [(queued["id"], "pause", "fast:BTC/USDT")]

            runtime.step()
            done = http.get(f"/api/commands/{queued['id']}").json()
            assert (done["state"], done["result"]) == ("acknowledged", "paused: no new entries")
            status = http.get("/api/status").json()
            sleeves = {s["sleeve"]: s for s in status["sleeves"]}
            assert (status["status"], status["reason"]) == ("paused", "paused by api")
            assert sleeves["fast:BTC/USDT"]["paused"] is True
            assert sleeves["trend:BTC/USDT"]["paused"] is False

            ids = {name: http.post(path, json=body).json()["id"] for name, path, body in (
                ("resume", "/api/resume", {"sleeve": "fast:BTC/USDT"}), ("flatten", "/api/flatten", None),
                ("reset", "/api/reset-breaker", {}))}
            runtime.step()
            results = {name: http.get(f"/api/commands/{number}").json()["result"] for name, number in ids.items()}
            assert results == {"resume": "resumed", "flatten": "flattening at the next fill",
                               "reset": "breakers reset"}
            status = http.get("/api/status").json()
            assert status["status"] == "running"
            assert not any(s["paused"] for s in status["sleeves"])

            unknown = http.post("/api/pause", json={"sleeve": "nope:BTC/USDT"})
            assert unknown.status_code == 400 and unknown.json()["detail"].startswith("sleeve:")
            assert "fast:BTC/USDT" in unknown.json()["detail"]
            extra = http.post("/api/flatten", json={"sleeve": None, "now": True})
            assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "now"]
            assert store.pending_commands() == []  # refused commands were not queued

            stop = http.post("/api/stop").json()
            runtime.step()
            assert not runtime.running
            assert http.get(f"/api/commands/{stop['id']}").json()["result"] == "stopping"
            assert http.get("/api/status").json()["status"] == "stopped"
            listed = http.get("/api/commands", params={"limit": 3}).json()
            assert [c["id"] for c in listed] == [stop["id"], ids["reset"], ids["flatten"]]
    finally:
        runtime.finish()
        store.close()
    assert runtime.summary is not None
    assert runtime.summary.stopped_by == "stop command from api"
    assert runtime.summary.commands == 5


def test_a_command_before_any_runtime_state_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, TOKEN)
    with serving(settings) as api, api.client(TOKEN) as http:
        refused = http.post("/api/pause")
        assert refused.status_code == 409
        assert "no runtime state" in refused.json()["detail"]
        status = http.get("/api/status").json()
        assert (status["status"], status["sleeves"], status["heartbeat_at"]) == ("no runtime state", [], None)
        assert http.get("/api/trades").json() == []
        for path in ("/api/trades", "/api/breakers"):  # no sleeves to check a sleeve against yet
            assert http.get(path, params={"sleeve": "fast:BTC/USDT"}).json() == []
        assert http.get("/api/equity", params={"sleeve": "fast:BTC/USDT"}).json()["points"] == []
        assert http.get("/api/commands/1").status_code == 404
    assert not (tmp_path / "data" / "state").exists()  # the API created no database
