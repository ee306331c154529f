"""What one runtime process is asked to do: ``RuntimeConfig``, parsed once at the edge.

``tradeforge runtime`` and ``python -m runtime`` build the same frozen ``RuntimeConfig``; ``runtime.wiring`` turns
it (with the settings) into a running node. The config refuses what the runtime cannot honour before anything is
opened, naming each option with the range or the values it accepts (``pipeline.input_errors``): the engine's
bounds on costs, cash and position size (a single-strategy runtime trades without leverage, so a position is at
most the equity), the fill conventions, timeframes, symbols, feeds, brokers, dates and their order, and options
that exclude each other. Each field is one command-line option (``--fee-bps`` for
``fee_bps``; ``--param`` for ``params``, ``--json`` for ``as_json``), so ``parse_args`` reads a command line
into a config and ``runtime_command`` renders a config back into the ``python -m runtime`` command line that
runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline.domain import DataError, Timeframe, parse_symbol, parse_utc
from pipeline.input_errors import describe, did_you_mean

Mode = Literal["paper", "live"]
Fill = Literal["next_open", "close"]
FEEDS = ("replay", "sample", "ccxt", "alpaca")
BROKERS = ("paper", "ccxt", "alpaca")
COMMANDS = ("pause", "resume", "flatten", "reset-breaker", "stop")
_OPTION_NAMES = {"params": "--param", "as_json": "--json"}


class RuntimeConfig(BaseModel):
    """Everything a runtime start takes besides the settings: what it trades, from which bars, where orders go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = Field("paper", description="paper (the engine's fill model) or live (real money).")
    portfolio: Path | None = Field(None, description="Portfolio file (TOML/YAML).")
    strategy: str | None = Field(None, description="Single-strategy run: a strategy name, PATH.py:Class or "
                                                   "package.module:Class.")
    symbol: str | None = Field(None, description="Single-strategy run: the symbol.")
    timeframe: str = Field("1m", description="Bar timeframe.")
    venue: str | None = Field(None, description="Venue, when several hold the symbol.")
    feed: str = Field("", description="Bar feed: replay (lake or --data), sample, ccxt or alpaca (live bars; "
                                      "default in live mode by symbol).")
    ws: bool = Field(False, description="ccxt feed: closed candles from the exchange's websocket (ccxt.pro "
                                        "watch_ohlcv) on top of REST history (default: the setting ccxt_websocket).")
    broker: str = Field("", description="Where orders go: paper (the engine's fill model), ccxt or alpaca (default: "
                                        "paper in paper mode; in live mode ccxt for crypto symbols, alpaca for "
                                        "stocks).")
    data: Path | None = Field(None, description="Replay a Parquet/CSV file of bars instead of the lake.")
    speed: str = Field("max", description="Replay pace: max, or a multiple of real time (e.g. 60).")
    batch: int = Field(8192, ge=1, description="Bars per transaction when replaying at max speed (paced "
                                               "replays: 1).")
    start: str | None = Field(None, description="First bar (UTC).")
    end: str | None = Field(None, description="End of the range, exclusive (UTC).")
    params: tuple[str, ...] = Field((), description="Strategy parameter name=value (repeatable).")
    fee_bps: float = Field(10.0, ge=0, le=1000, description="Fee in bps of notional.")
    slippage_bps: float = Field(0.0, ge=0, le=1000, description="Fixed slippage in bps.")
    fill: Fill = Field("next_open", description="next_open or close.")
    cash: float = Field(100_000.0, gt=0, description="Starting cash.")
    max_position: float = Field(0.25, gt=0, le=1, description="Largest position as a fraction of equity.")
    no_breakers: bool = Field(False, description="Switch every circuit breaker off.")
    breaker_cooldown_bars: int | None = Field(
        None, ge=1, description="Drawdown and loss-streak breakers release by themselves after this many bars, as "
                                "an operator's reset would (default: they wait for the operator). Daily breakers "
                                "release at the next trading day.")
    allow_unchecked: bool = Field(False, description="Trade a strategy of your own even when it fails `tradeforge "
                                                      "strategies check` (recorded as a runtime event).")
    fresh: bool = Field(False, description="Start a new runtime (refused if state exists).")
    restore: bool = Field(False, description="Restore the saved state (the default).")
    verbose: bool = Field(False, description="Print every fill, breaker and command.")
    as_json: bool = Field(False, description="Print one JSON document on stdout.")

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        try:
            Timeframe.parse(value)
        except DataError as exc:
            raise ValueError(str(exc).removeprefix("timeframe ")) from None
        return value

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_symbol(value)
            except DataError as exc:
                raise ValueError(str(exc).removeprefix("symbol ")) from None
        return value

    @field_validator("feed", "broker")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        names = FEEDS if info.field_name == "feed" else BROKERS
        if value and value not in names:
            raise ValueError(f"{value!r} is not known: use {', '.join(names[:-1])} or {names[-1]}"
                             f"{did_you_mean(value, names)}")
        return value

    @field_validator("start", "end")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        try:
            parse_utc(value, "")
        except DataError as exc:
            raise ValueError(str(exc).strip()) from None
        return value

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: str) -> str:
        if value == "max":
            return value
        try:
            pace = float(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a number (or 'max')") from exc
        if pace <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            key, sep, _ = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item!r} is not of the form name=value")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuntimeConfig:
        if self.fresh and self.restore:
            raise ValueError("--fresh and --restore exclude each other")
        if self.portfolio is not None and (self.strategy or self.symbol or self.params):
            given = [option_name(name) for name in ("strategy", "symbol", "params") if getattr(self, name)]
            raise ValueError(f"--portfolio and {' and '.join(given)} exclude each other: a portfolio file names its "
                             "strategies, symbols and parameters")
        lo, hi = parse_utc(self.start, "--start"), parse_utc(self.end, "--end")
        if lo is not None and hi is not None and lo >= hi:
            relation = "is after" if lo > hi else "is the same time as"
            raise ValueError(f"--start {self.start} {relation} --end {self.end}: the range is empty (--end is "
                             "exclusive and must be after --start)")
        return self

    @property
    def pace(self) -> float | None:
        """The replay's multiple of real time; None replays as fast as possible."""
        return None if self.speed == "max" else float(self.speed)

    @property
    def param_map(self) -> dict[str, str]:
        """The strategy parameters of a single-strategy run, by name."""
        return parse_params(self.params)

    @classmethod
    def of(cls, **values: Any) -> RuntimeConfig:
        """The config of these option values, or a ``DataError`` naming each bad option."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise DataError(_problems(exc)) from exc


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``name=value`` strategy parameters as a mapping."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--param {item!r} is not of the form name=value")
        params[key.strip()] = value.strip()
    return params


def option_name(field: str) -> str:
    """The command-line option of a ``RuntimeConfig`` field."""
    return _OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def _problems(exc: ValidationError) -> str:
    return describe(exc, RuntimeConfig, option_name, separator=" ")


def to_args(config: RuntimeConfig) -> list[str]:
    """The options that give ``config`` (only those that differ from the defaults), in field order."""
    args: list[str] = []
    for name, field in RuntimeConfig.model_fields.items():
        value = getattr(config, name)
        if value == field.get_default(call_default_factory=True):
            continue
        option = option_name(name)
        if isinstance(value, bool):
            args.append(option)
        elif isinstance(value, tuple):
            for item in value:
                args += [option, str(item)]
        else:
            args += [option, str(value)]
    return args


def runtime_command(config: RuntimeConfig, python: str = sys.executable) -> list[str]:
    """The ``python -m runtime`` command line that runs ``config``."""
    return [python, "-m", "runtime", *to_args(config)]


class OneLineParser(argparse.ArgumentParser):
    """An argparse command line whose usage errors are one line on stderr, ``error: ...`` (exit code 2), with the
    JSON error document on stdout when ``--json`` is among the arguments, as ``tradeforge`` refuses."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self.json_errors = "--json" in (sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        refuse(message, getattr(self, "json_errors", False), f"see '{self.prog} --help'")
        raise SystemExit(2)


def refuse(message: str, as_json: bool, hint: str = "") -> None:
    """Print a refusal: ``error: message`` on one line of stderr, and ``{"error": ...}`` on stdout with ``--json``."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if hint:
        line = f"{line} ({hint})"
    if as_json:
        print(json.dumps({"error": line}), flush=True)
    print(f"error: {line}", file=sys.stderr, flush=True)


def parser(prog: str = "python -m runtime") -> OneLineParser:
    """The runtime's command line: one option per ``RuntimeConfig`` field, with the field's description as help.
    Values are checked by ``RuntimeConfig`` (as for ``tradeforge runtime``), not by argparse."""
    built = OneLineParser(
        prog=prog, description="Run the trading runtime. Startup is recovery: restore, reconcile, catch up, then "
                               "trade. `ctl COMMAND` sends a control command to the running runtime instead.")
    for name, field in RuntimeConfig.model_fields.items():
        option, default = option_name(name), field.get_default(call_default_factory=True)
        if field.annotation is bool:
            built.add_argument(option, dest=name, action="store_true", help=field.description)
        elif name == "params":
            built.add_argument(option, dest=name, action="append", default=[], metavar="NAME=VALUE",
                               help=field.description)
        else:
            suffix = "" if default in (None, "") else f" (default: {default})"
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
            numbers = [kind for kind in (int, float) if kind in (field.annotation, *get_args(field.annotation))]
            typed: dict[str, Any] = {"type": numbers[0]} if numbers else {}
            built.add_argument(option, dest=name, default=default, **typed,
                               metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
                               help=f"{field.description}{suffix}")
    return built


def parse_args(argv: Sequence[str]) -> RuntimeConfig:
    """Read a ``python -m runtime`` command line into a config (``SystemExit`` 2 on a usage error, as argparse)."""
    command_line = parser()
    values = vars(command_line.parse_args(list(argv)))
    try:
        return RuntimeConfig.of(**{k: v for k, v in values.items() if v is not None})
    except DataError as exc:
        command_line.error(str(exc))
