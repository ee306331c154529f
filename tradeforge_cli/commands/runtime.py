"""``runtime`` (the trading runtime, paper or live) and ``runtime ctl`` (control commands for the running one).

The options become a ``runtime.config.RuntimeConfig``, the same one ``python -m runtime`` builds; ``runtime.wiring``
checks the safety rules, wires the node and runs it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tradeforge_cli.commands.options import (
    CashOption,
    CooldownOption,
    EndOption,
    FeeOption,
    FillOption,
    JsonFlag,
    MaxPositionOption,
    NoBreakersOption,
    ParamOption,
    SlippageOption,
    StartOption,
    VenueOption,
)
from tradeforge_cli.commands.output import emit, fail, format_value, load_settings, pairs, say


class Mode(StrEnum):
    paper = "paper"
    live = "live"


class Command(StrEnum):
    pause = "pause"
    resume = "resume"
    flatten = "flatten"
    reset_breaker = "reset-breaker"
    stop = "stop"


def runtime(
    context: typer.Context,
    mode: Annotated[Mode, typer.Option(help="paper (the engine's fill model) or live (real money).")] = Mode.paper,
    portfolio: Annotated[Path | None, typer.Option(help="Portfolio file (TOML/YAML).")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Single-strategy run: a strategy name, PATH.py:Class or package.module:Class.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Single-strategy run: the symbol.")] = None,
    timeframe: Annotated[str, typer.Option(help="Bar timeframe.")] = "1m",
    venue: VenueOption = None,
    feed: Annotated[str, typer.Option(
        help="Bar feed: replay (lake or --data), sample, ccxt or alpaca (live bars; default in live mode by symbol).")
    ] = "",
    ws: Annotated[bool, typer.Option(
        "--ws", help="ccxt feed: closed candles from the exchange's websocket (ccxt.pro watch_ohlcv) on top of REST "
                     "history (default: the setting ccxt_websocket).")] = False,
    broker: Annotated[str, typer.Option(
        help="Where orders go: paper (the engine's fill model), ccxt or alpaca (default: paper in paper mode; "
             "in live mode ccxt for crypto symbols, alpaca for stocks).")
    ] = "",
    data: Annotated[Path | None, typer.Option(help="Replay a Parquet/CSV file of bars instead of the lake.")] = None,
    speed: Annotated[str, typer.Option(help="Replay pace: max, or a multiple of real time (e.g. 60).")] = "max",
    batch: Annotated[
        int, typer.Option(min=1, help="Bars per transaction when replaying at max speed (paced replays: 1).")
    ] = 8192,
    start: StartOption = None,
    end: EndOption = None,
    param: ParamOption = None,
    fee_bps: FeeOption = 10.0,
    slippage_bps: SlippageOption = 0.0,
    fill: FillOption = "next_open",
    cash: CashOption = 100_000.0,
    max_position: MaxPositionOption = 0.25,
    no_breakers: NoBreakersOption = False,
    breaker_cooldown_bars: CooldownOption = None,
    allow_unchecked: Annotated[bool, typer.Option(
        "--allow-unchecked", help="Trade a strategy of your own even when it fails `tradeforge strategies check` "
                                  "(recorded as a runtime event).")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new runtime (refused if state exists).")] = False,
    restore: Annotated[bool, typer.Option("--restore", help="Restore the saved state (the default).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print every fill, breaker and command.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the trading runtime. Startup is recovery: restore, reconcile, catch up, then trade."""
    if context.invoked_subcommand is not None:
        return
    from pipeline.domain import DataError
    from runtime import wiring
    from runtime.config import RuntimeConfig
    from runtime.node import StartupError

    settings = load_settings()
    try:
        config = RuntimeConfig.of(
            mode=mode.value, portfolio=portfolio, strategy=strategy, symbol=symbol, timeframe=timeframe, venue=venue,
            feed=feed, ws=ws, broker=broker, data=data, speed=speed, batch=batch, start=start, end=end,
            params=tuple(param or ()), fee_bps=fee_bps, slippage_bps=slippage_bps, fill=fill, cash=cash,
            max_position=max_position, no_breakers=no_breakers, breaker_cooldown_bars=breaker_cooldown_bars,
            allow_unchecked=allow_unchecked, fresh=fresh, restore=restore, verbose=verbose, as_json=as_json)
        summary = wiring.run(config, settings, say)
    except (DataError, StartupError) as exc:
        raise fail(str(exc)) from exc
    document = summary.to_json()
    rows = [(key, escape(format_value(value) if not isinstance(value, list) else "; ".join(map(str, value))))
            for key, value in document.items()]
    emit(document, as_json, pairs(rows, f"runtime ({mode.value})"))


def runtime_ctl(
    command: Annotated[Command, typer.Argument(help="pause, resume, flatten, reset-breaker or stop.")],
    sleeve: Annotated[str | None, typer.Option(
        help="Only this sleeve, as the runtime names it: id:SYMBOL (default: all).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a control command to the running runtime (through the state store)."""
    from pipeline.domain import DataError
    from runtime.ctl import queue

    settings = load_settings()
    try:
        queued = queue(settings, command.value, sleeve)
    except DataError as exc:
        raise fail(str(exc)) from exc
    table = pairs([("queued", f"{escape(queued.command)} (#{queued.id}); applied within one loop of the runtime")])
    emit(queued.to_json(), as_json, table)


def register(app: typer.Typer) -> None:
    runtime_app = typer.Typer(help="The trading runtime (paper or live).", invoke_without_command=True,
                              rich_markup_mode=None)
    runtime_app.callback()(runtime)
    runtime_app.command("ctl")(runtime_ctl)
    app.add_typer(runtime_app, name="runtime")
