"""The daily summary: what every strategy sleeve did over one UTC day, from the trading state.

Per sleeve (and for the whole portfolio): realised PnL (the sum of the ``pnl`` of trades that closed that day,
after fees, exact), fees, the number of trades, wins and the win rate (wins / trades; None without trades),
the equity at the end of the day and its change over the day (from the last mark before the day, or the first
mark of the day), and the circuit-breaker events of the day: each trip and each release (a daily breaker
releasing at the new trading day, a cool-down, an operator's reset), counted as trips and releases. Money stays
``Decimal`` and is written to JSON as text, so nothing is rounded.

``write_summary`` stores ``<data_dir>/reports/<date>/summary.json``, ``summary.md`` and ``equity.png`` (every
sleeve's and the portfolio's equity over the day; matplotlib, Agg backend). ``summary_text`` is the short
message sent to Telegram with the chart.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.data.lake import atomic_write_bytes
from pipeline.domain import DataError
from pipeline.state import PORTFOLIO, EquityRecord, StateStore

REPORTS_DIR = "reports"


@dataclass(frozen=True)
class SleeveDay:
    sleeve: str
    trades: int
    wins: int
    realised_pnl: Decimal
    fees: Decimal
    equity_start: Decimal | None
    equity_end: Decimal | None
    breaker_events: list[dict[str, Any]]

    @property
    def win_rate(self) -> float | None:
        return None if self.trades == 0 else self.wins / self.trades

    @property
    def breaker_trips(self) -> int:
        return sum(1 for e in self.breaker_events if e["action"] == "trip")

    @property
    def breaker_releases(self) -> int:
        return sum(1 for e in self.breaker_events if e["action"] == "release")

    @property
    def equity_change(self) -> Decimal | None:
        if self.equity_start is None or self.equity_end is None:
            return None
        return self.equity_end - self.equity_start

    def to_json(self) -> dict[str, Any]:
        return {"sleeve": self.sleeve, "trades": self.trades, "wins": self.wins, "win_rate": self.win_rate,
                "realised_pnl": str(self.realised_pnl), "fees": str(self.fees),
                "equity_start": _text(self.equity_start), "equity_end": _text(self.equity_end),
                "equity_change": _text(self.equity_change), "breaker_events": self.breaker_events,
                "breaker_trips": self.breaker_trips, "breaker_releases": self.breaker_releases}


@dataclass(frozen=True)
class DailySummary:
    day: date
    sleeves: list[SleeveDay]
    portfolio: SleeveDay
    curves: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    """Equity marks of the day per sleeve (and ``portfolio``), for the chart."""

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "portfolio": self.portfolio.to_json(),
                "sleeves": [s.to_json() for s in self.sleeves]}


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def parse_day(text: str | None, now: datetime) -> date:
    """``YYYY-MM-DD``, or the last complete UTC day before ``now`` when ``text`` is empty."""
    if text is None or not text.strip():
        return (now.astimezone(UTC) - timedelta(days=1)).date()
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise DataError(f"day {text!r} is not a date of the form YYYY-MM-DD") from exc


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def daily_summary(store: StateStore, day: date) -> DailySummary:
    """The summary of ``day`` (UTC) from the state in ``store``."""
    start, end = day_bounds(day)
    trades = [t for t in store.trades() if start <= t.exit_time < end]
    events = [e for e in store.breaker_events() if start <= e.at < end]
    marks = store.equity()
    known = {t.sleeve for t in store.trades()} | set(store.ledgers()) | {m.sleeve for m in marks}
    sleeves = sorted(known - {PORTFOLIO})
    by_sleeve: dict[str, list[EquityRecord]] = defaultdict(list)
    for mark in marks:
        by_sleeve[mark.sleeve].append(mark)
    rows = [_sleeve_day(name, [t for t in trades if t.sleeve == name], [e for e in events if e.sleeve == name],
                        by_sleeve.get(name, []), start, end) for name in sleeves]
    total = _sleeve_day(PORTFOLIO, trades, events, by_sleeve.get(PORTFOLIO, []), start, end)
    curves = {name: [(m.at, float(m.equity)) for m in by_sleeve.get(name, []) if start <= m.at < end]
              for name in [*sleeves, PORTFOLIO]}
    return DailySummary(day, rows, total, {k: v for k, v in curves.items() if v})


def _sleeve_day(name: str, trades: list[Any], events: list[Any], marks: list[EquityRecord], start: datetime,
                end: datetime) -> SleeveDay:
    before = [m for m in marks if m.at < start]
    during = [m for m in marks if start <= m.at < end]
    equity_start = before[-1].equity if before else (during[0].equity if during else None)
    equity_end = during[-1].equity if during else (before[-1].equity if before else None)
    return SleeveDay(
        sleeve=name,
        trades=len(trades),
        wins=sum(1 for t in trades if t.pnl > 0),
        realised_pnl=sum((t.pnl for t in trades), Decimal(0)),
        fees=sum((t.fees for t in trades), Decimal(0)),
        equity_start=equity_start,
        equity_end=equity_end,
        breaker_events=[{"sleeve": e.sleeve, "at": e.at.isoformat(), "rule": e.rule, "action": e.action,
                         "value": e.value, "threshold": e.threshold} for e in events],
    )


def summary_text(summary: DailySummary) -> str:
    """The message: one line per sleeve and the portfolio's totals."""
    p = summary.portfolio
    lines = [f"tradeforge daily summary {summary.day.isoformat()} (UTC)",
             f"portfolio: PnL {_money(p.realised_pnl)} | trades {p.trades} | win rate {_rate(p.win_rate)}"
             + (f" | equity {_money(p.equity_end)} ({_signed(p.equity_change)})" if p.equity_end is not None else "")
             + f" | {_breakers(p)}"]
    for s in summary.sleeves:
        lines.append(f"{s.sleeve}: PnL {_money(s.realised_pnl)} | trades {s.trades} | win rate {_rate(s.win_rate)}"
                     f" | {_breakers(s)}")
    if not summary.sleeves:
        lines.append("no strategy has traded yet")
    return "\n".join(lines)


def _breakers(day: SleeveDay) -> str:
    return f"breaker trips {day.breaker_trips}, releases {day.breaker_releases}"


def _event_line(event: dict[str, Any]) -> str:
    if event["action"] == "trip":
        return (f"- {event['at']} {event['sleeve']}: {event['rule']} tripped "
                f"({event['value']:.4g} > {event['threshold']:.4g})")
    return f"- {event['at']} {event['sleeve']}: {event['rule']} released"


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _signed(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:+,.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown(summary: DailySummary) -> str:
    header = ("| sleeve | realised PnL | fees | trades | win rate | equity end | equity change | breaker trips | "
              "breaker releases |")
    lines = [f"# Daily summary {summary.day.isoformat()} (UTC)", "", header,
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in [*summary.sleeves, summary.portfolio]:
        name = f"**{s.sleeve}**" if s.sleeve == PORTFOLIO else s.sleeve
        lines.append(f"| {name} | {_money(s.realised_pnl)} | {_money(s.fees)} | {s.trades} | {_rate(s.win_rate)} | "
                     f"{_money(s.equity_end)} | {_signed(s.equity_change)} | {s.breaker_trips} | "
                     f"{s.breaker_releases} |")
    events = summary.portfolio.breaker_events
    if events:
        lines += ["", "## Breaker events", ""]
        lines += [_event_line(e) for e in events]
    lines += ["", "![equity](equity.png)", ""]
    return "\n".join(lines)


def equity_chart(summary: DailySummary) -> bytes:
    """A PNG of the day's equity per sleeve (left axis) and for the portfolio (right axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name, points in summary.curves.items():
        if name == PORTFOLIO or not points:
            continue
        times: Any = [t for t, _ in points]
        axis.plot(times, [v for _, v in points], linewidth=1, label=name)
    axis.set_ylabel("sleeve equity")
    portfolio = summary.curves.get(PORTFOLIO, [])
    if portfolio:
        right = axis.twinx()
        stamps: Any = [t for t, _ in portfolio]
        right.plot(stamps, [v for _, v in portfolio], color="black", linewidth=1.6,
                   label=PORTFOLIO)
        right.set_ylabel("portfolio equity")
        right.legend(loc="upper right")
    if any(name != PORTFOLIO for name in summary.curves):
        axis.legend(loc="upper left", fontsize="small")
    if not summary.curves:
        axis.text(0.5, 0.5, "no equity marks on this day", ha="center", va="center", transform=axis.transAxes)
    axis.set_title(f"equity {summary.day.isoformat()} (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


@dataclass(frozen=True)
class StoredSummary:
    folder: Path
    json_path: Path
    markdown_path: Path
    chart_path: Path
    chart: bytes


def write_summary(summary: DailySummary, data_dir: Path) -> StoredSummary:
    """Store the summary under ``<data_dir>/reports/<date>/`` (each file written atomically)."""
    folder = data_dir / REPORTS_DIR / summary.day.isoformat()
    chart = equity_chart(summary)
    paths = (folder / "summary.json", folder / "summary.md", folder / "equity.png")
    atomic_write_bytes(paths[0], json.dumps(summary.to_json(), indent=2).encode())
    atomic_write_bytes(paths[1], markdown(summary).encode())
    atomic_write_bytes(paths[2], chart)
    return StoredSummary(folder, *paths, chart)
