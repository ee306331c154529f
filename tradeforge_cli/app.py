"""The ``tradeforge`` command: the composition root, the one place that wires every part together.

This module only assembles the Typer application from the command groups in ``tradeforge_cli.commands``.
Reporting commands take ``--json`` and then print exactly one JSON document on stdout; progress and errors go
to stderr. Nothing is hard-wrapped to the terminal width, and usage errors are plain ``Error: ...`` lines.
Modules a command needs (pandas, MLflow, PyTorch, Prefect, the venue clients, Telegram) are imported by that
command, so ``tradeforge --help`` and every command start without the others' imports.
"""

from __future__ import annotations

import logging

import typer

from tradeforge_cli.commands import backtest, data, models, optimize, platform, runtime, strategies
from tradeforge_cli.commands.output import CommandLine

# Every Typer has plain (not rich) help and usage errors (rich_markup_mode=None): rich draws a usage error in a box
# as wide as the terminal and wraps the message inside it, splitting the option values and paths it names.
app = typer.Typer(
    cls=CommandLine,  # usage errors and settings that do not load are refused on one line, as every command refuses
    name="tradeforge",
    help="tradeforge: systematic trading of crypto and US stocks.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # a crash report must not print local variables (secrets among them)
)
for command_group in (data, backtest, optimize, strategies, models, runtime, platform):
    command_group.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
