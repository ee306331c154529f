"""Operator control through the state store: what Telegram (or any other channel) reads and commands.

Commands (pause, resume, flatten, reset_breaker, stop) are written to the store by the dashboard, Telegram or
``tradeforge runtime ctl``; the node applies them within one loop and acknowledges them. Status texts are read
from the store, so every channel sees the same committed state.
"""

from __future__ import annotations

from pipeline.state import StateStore


class StoreControl:
    """``StatusSource`` and ``CommandSink`` (``runtime.notify``) backed by the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def submit(self, command: str, source: str) -> None:
        self.store.add_command(command.replace("-", "_"), source)

    def status_text(self) -> str:
        state = self.store.bot_state()
        if state is None:
            return "no runtime state yet"
        heartbeat = state.heartbeat_at.isoformat(timespec="seconds") if state.heartbeat_at else "never"
        tripped = [f"{sleeve}: {row.tripped}" for sleeve, row in self.store.ledgers().items() if row.tripped]
        lines = [f"{state.mode} runtime {state.status} ({state.status_reason})", f"heartbeat {heartbeat}"]
        lines += [f"breakers latched: {'; '.join(tripped)}"] if tripped else ["no breaker latched"]
        return "\n".join(lines)

    def positions_text(self) -> str:
        held = [p for p in self.store.positions() if p.qty != 0]
        if not held:
            return "no open positions"
        return "\n".join(f"{p.sleeve}: {p.qty.normalize()} {p.symbol} @ {p.avg_price.normalize()}" for p in held)

    def pnl_text(self) -> str:
        ledgers = self.store.ledgers()
        if not ledgers:
            return "no ledger yet"
        return "\n".join(f"{sleeve}: equity {row.equity.quantize(row.equity.__class__('0.01'))}"
                         for sleeve, row in sorted(ledgers.items()))
