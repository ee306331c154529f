"""The sleeves a request may name: those of the runtime's ledgers (and ``portfolio`` where it has rows of its own).

A sleeve is checked once the runtime has created its state; before that every list is empty anyway.
"""

from __future__ import annotations

from fastapi import HTTPException, status

from pipeline.state import PORTFOLIO, StateStore


def known_sleeves(store: StateStore, *, portfolio: bool) -> list[str]:
    """The runtime's sleeves, sorted, then ``portfolio`` when ``portfolio``."""
    names = sorted(name for name in store.ledgers() if name != PORTFOLIO)
    return [*names, PORTFOLIO] if portfolio else names


def check_sleeve(store: StateStore | None, sleeve: str | None, *, portfolio: bool, omitted: str) -> None:
    """A 400 naming ``sleeve`` and the known ones when the runtime's state exists and ``sleeve`` is not one of
    them; ``omitted`` says what leaving it out does."""
    if sleeve is None or store is None:
        return
    known = known_sleeves(store, portfolio=portfolio)
    if sleeve not in known:
        choices = f"use one of {known}" if known else "the runtime has no sleeves yet"
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"sleeve: {sleeve!r} is not a sleeve of the runtime: {choices} ({omitted})")
