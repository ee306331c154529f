"""The invariants a restored state backup must satisfy, and the report of a restore drill.

``check_state`` lists every violation in a state store: a schema version this tradeforge does not read, a
fill without its order, a position that differs from the signed sum of its sleeve's fills in that symbol, a
sleeve with fills, positions or trades but no ledger. ``inspect_restored`` opens a restored database read-only
and runs it; ``pipeline.state.backup``'s restore drill reports the outcome as a ``DrillReport``.
"""

from __future__ import annotations

import gzip
import zlib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.state import SCHEMA_VERSION, StateError, StateStore

_QTY_TOLERANCE = Decimal("1e-9")


@dataclass(frozen=True)
class DrillReport:
    backup: Path
    checksum_ok: bool
    integrity: str
    schema_version: int | None
    rows: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"backup": str(self.backup), "ok": self.ok, "checksum_ok": self.checksum_ok,
                "integrity": self.integrity, "schema_version": self.schema_version, "rows": self.rows,
                "problems": self.problems}


def inspect_restored(url: str) -> tuple[int | None, dict[str, int], list[str]]:
    """Open the restored state at ``url``: its schema version, row counts and invariant violations."""
    try:
        store = StateStore.read_only(url)
    except StateError as exc:
        return None, {}, [f"the restored state cannot be opened: {exc}"]
    try:
        rows = {"orders": len(store.orders()), "fills": len(store.fills()), "positions": len(store.positions()),
                "trades": len(store.trades()), "ledgers": len(store.ledgers())}
        return store.schema_version(), rows, check_state(store)
    finally:
        store.close()


def check_state(store: StateStore) -> list[str]:
    """The state invariants (module documentation); returns every violation found (empty: all hold)."""
    problems: list[str] = []
    version = store.schema_version()
    if version != SCHEMA_VERSION:
        problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
    orders = {order.client_order_id for order in store.orders()}
    fills = store.fills()
    orphans = [fill.fill_id for fill in fills if fill.client_order_id not in orders]
    if orphans:
        problems.append(f"{len(orphans)} fill(s) without their order: {', '.join(orphans[:5])}")
    held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for fill in fills:
        held[(fill.sleeve, fill.symbol)] += fill.qty if fill.side == "buy" else -fill.qty
    positions = {(p.sleeve, p.symbol): p.qty for p in store.positions()}
    for key in sorted(set(held) | set(positions)):
        expected, recorded = held.get(key, Decimal(0)), positions.get(key)
        if recorded is None:
            if abs(expected) > _QTY_TOLERANCE:
                problems.append(f"{key[0]} {key[1]}: fills add up to {expected} but there is no position")
            continue
        if abs(recorded - expected) > _QTY_TOLERANCE * max(Decimal(1), abs(expected)):
            problems.append(f"{key[0]} {key[1]}: position {recorded} differs from the sum of its fills {expected}")
    ledgers = set(store.ledgers())
    active = {f.sleeve for f in fills} | {p.sleeve for p in store.positions()} | {t.sleeve for t in store.trades()}
    missing = sorted(active - ledgers)
    if missing:
        problems.append(f"sleeve(s) without a ledger: {', '.join(missing)}")
    return problems


def unreadable(path: Path) -> str | None:
    """Why the gzip file ``path`` does not read to its end (a truncated or damaged stream), or None when it does:
    the check of every new backup, cheap beside the restore drill."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"backup {path.name} does not read to its end ({exc}): the file is damaged"
    return None
