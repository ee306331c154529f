"""Bad input is refused with clear errors, and every record carries exactly its table's columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sqlmodel import select

from pipeline.domain.trading import Fill, Order, Position, Trade
from pipeline.domain.values import DecimalText, UTCDateTime
from pipeline.state import (
    BreakerEventRow,
    BreakerRecord,
    CursorRecord,
    EquityRecord,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRecord,
    LedgerRow,
    OrderRow,
    PositionRow,
    StateStore,
    StepRecord,
    TradeRow,
)
from pipeline.state.tables import table_of
from tests.pipeline.state.records import T0, D, fill, full_step, order, renew, snapshot


@pytest.mark.parametrize(("record", "row"), [
    (Order, OrderRow), (Fill, FillRow), (Position, PositionRow), (Trade, TradeRow),
    (LedgerRecord, LedgerRow), (BreakerRecord, BreakerEventRow), (EquityRecord, EquityRow),
    (CursorRecord, FeedCursor)])
def test_each_record_carries_its_tables_columns(record: type[Any], row: type[Any]) -> None:
    """The step writer stores an entity's fields as they are: they must be its table's columns (its surrogate id
    aside), money exactly where the table stores exact money and times where it stores UTC times; the table
    extends the entity, so its fields are declared once."""
    assert issubclass(row, record)
    columns = {c.name: c.type for c in table_of(row).columns if c.name != "id"}
    fields = {name: str(f.annotation) for name, f in record.model_fields.items()}
    assert set(fields) == set(columns)
    for name, annotation in fields.items():
        assert ("Decimal" in annotation) == isinstance(columns[name], DecimalText), name
        assert ("datetime" in annotation) == isinstance(columns[name], UTCDateTime), name


def test_bad_input_is_refused_with_clear_errors(store: StateStore) -> None:
    naive = datetime(2026, 11, 20, 9, 0)
    with pytest.raises(ValueError, match=r"Fill\.at must be a tz-aware datetime.*naive"):
        renew(fill("x"), at=naive)
    with pytest.raises(TypeError, match=r"Fill\.qty must be an exact Decimal, got the float 0\.1"):
        renew(fill("x"), qty=0.1)
    with pytest.raises(ValidationError, match=r"frozen"):
        fill("x").qty = D(1)  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"Order\.price must be an exact Decimal, got the float"):
        order(price=91234.5)
    with pytest.raises(ValueError, match=r"EquityRecord\.cash must be a finite Decimal"):
        EquityRecord(at=T0, sleeve="btc", equity=D(1), cash=D("NaN"), position_value=D(0))
    with pytest.raises(ValueError, match=r"(?s)for Order\nside\n.*'buy' or 'sell'.*input_value='hold'"):
        order(side="hold")
    with pytest.raises(ValueError, match=r"(?s)for Order\nstatus\n.*'new', 'partially_filled'.*input_value='done'"):
        order(status="done")
    with pytest.raises(TypeError, match=r"StepRecord\.fills\[0\] must be a Fill"):
        StepRecord(fills=[order()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"StepRecord\.heartbeat_at must be a tz-aware"):
        StepRecord(heartbeat_at=naive)
    with pytest.raises(ValueError, match="at must be a tz-aware"):
        store.heartbeat(naive)
    with pytest.raises(ValueError, match="since must be a tz-aware"):
        store.fills(since=naive)

    store.apply_step(full_step())
    before = snapshot(store)
    with pytest.raises(TypeError, match=r"PositionRow\.qty must be an exact Decimal, got the float"), \
            store.transaction() as session:
        session.add(PositionRow(sleeve="eth", symbol="ETH/USDT", qty=0.1, avg_price=D(2),
                                updated_at=T0))  # type: ignore[arg-type]

    def make_a_stored_time_naive() -> None:
        with store.transaction() as session:
            row = session.exec(select(FillRow)).first()
            assert row is not None
            row.at = naive

    with pytest.raises(ValueError, match=r"FillRow\.at must be a tz-aware datetime"):
        make_a_stored_time_naive()
    assert snapshot(store) == before
