"""Options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
StartOption = Annotated[str | None, typer.Option("--start", help="First bar (UTC).")]
EndOption = Annotated[str | None, typer.Option("--end", help="End of the range, exclusive (UTC).")]
VenueOption = Annotated[str | None, typer.Option("--venue", help="Venue, when several hold the symbol.")]
ParamOption = Annotated[
    list[str] | None, typer.Option("--param", help="Strategy parameter name=value (repeatable).")
]
FeeOption = Annotated[float, typer.Option("--fee-bps", help="Fee in bps of notional.")]
SlippageOption = Annotated[float, typer.Option("--slippage-bps", help="Fixed slippage in bps.")]
FillOption = Annotated[str, typer.Option(
    "--fill", help="Where a decision at a bar's close fills: next_open (the next bar's open) or close (that close).")]
CashOption = Annotated[float, typer.Option("--cash", help="Starting cash.")]
MaxPositionOption = Annotated[
    float, typer.Option("--max-position", help="Largest position as a fraction of equity.")
]
NoBreakersOption = Annotated[bool, typer.Option("--no-breakers", help="Switch every circuit breaker off.")]
CooldownOption = Annotated[int | None, typer.Option(
    "--breaker-cooldown-bars",
    help="Drawdown and loss-streak breakers release by themselves after this many bars, as an operator's reset "
         "would (default: they wait for the operator). Daily breakers release at the next trading day.")]


def group(help_text: str) -> typer.Typer:
    """A command group with plain (not rich) help and usage errors, as the top-level app."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)
