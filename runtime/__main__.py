"""``python -m runtime``: run the trading runtime (the options of ``tradeforge runtime``), or
``python -m runtime ctl COMMAND [--sleeve S] [--json]`` to queue a control command for the running one.

The run summary goes to stdout (one JSON document with ``--json``); events (``--verbose``) and errors go to
stderr. Exit codes: 0 done, 1 refused or failed to start, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pipeline.domain import DataError
from pipeline.settings import Settings, load_settings
from runtime.config import COMMANDS, RuntimeConfig, parse_args


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        raise DataError(f"configuration is invalid: {exc}") from exc


def _print(document: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(document, default=str), flush=True)
        return
    width = max(len(key) for key in document)
    for key, value in document.items():
        text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
        print(f"{key:<{width}}  {text}", flush=True)


def run(config: RuntimeConfig) -> int:
    """Run the runtime of ``config``; the process's exit code."""
    from runtime import wiring
    from runtime.node import StartupError

    try:
        summary = wiring.run(config, _settings(), _say)
    except (DataError, StartupError) as exc:
        _say(f"error: {exc}")
        return 1
    _print(summary.to_json(), config.as_json)
    return 0


def ctl(argv: Sequence[str]) -> int:
    """Queue a control command in the state store; the runtime applies it within one loop."""
    from pipeline.state import StateStore

    command_line = argparse.ArgumentParser(prog="python -m runtime ctl", description=ctl.__doc__)
    command_line.add_argument("command", choices=COMMANDS)
    command_line.add_argument("--sleeve", help="Only this sleeve (default: all).")
    command_line.add_argument("--json", dest="as_json", action="store_true", help="Print one JSON document.")
    args = command_line.parse_args(list(argv))
    try:
        settings = _settings()
    except DataError as exc:
        _say(f"error: {exc}")
        return 1
    store = StateStore(settings.state_url)
    try:
        if store.bot_state() is None:
            _say(f"error: no runtime state in {settings.state_url}: is the runtime started?")
            return 1
        name = args.command.replace("-", "_")
        number = store.add_command(name, "cli", sleeve=args.sleeve)
    finally:
        store.close()
    _print({"id": number, "command": name, "sleeve": args.sleeve}, args.as_json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        return ctl(args[1:])
    return run(parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
