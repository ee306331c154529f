"""``python -m runtime``: run the trading runtime (the options of ``tradeforge runtime``), or
``python -m runtime ctl COMMAND [--sleeve S] [--json]`` to queue a control command for the running one.

The run summary goes to stdout (one JSON document with ``--json``); events (``--verbose``) and errors go to
stderr. A refusal is one line on stderr, ``error: ...``, naming the option or setting and what is wrong (and, with
``--json``, ``{"error": ...}`` on stdout). Exit codes: 0 done, 1 refused or failed to start, 2 a usage error.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from pipeline.domain import DataError
from pipeline.settings import Settings, SettingsError, load_settings
from runtime.config import COMMANDS, OneLineParser, RuntimeConfig, parse_args, refuse


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise DataError(str(exc)) from None


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
        refuse(str(exc), config.as_json)
        return 1
    _print(summary.to_json(), config.as_json)
    return 0


def ctl(argv: Sequence[str]) -> int:
    """Queue a control command in the state store; the runtime applies it within one loop."""
    from runtime.ctl import queue

    command_line = OneLineParser(prog="python -m runtime ctl", description=ctl.__doc__)
    command_line.add_argument("command", metavar="{" + ",".join(COMMANDS) + "}", help="The command.")
    command_line.add_argument("--sleeve", help="Only this sleeve (default: all).")
    command_line.add_argument("--json", dest="as_json", action="store_true", help="Print one JSON document.")
    args = command_line.parse_args(list(argv))
    try:
        queued = queue(_settings(), args.command, args.sleeve)
    except DataError as exc:
        refuse(str(exc), args.as_json)
        return 1
    _print(queued.to_json(), args.as_json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        return ctl(args[1:])
    return run(parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
