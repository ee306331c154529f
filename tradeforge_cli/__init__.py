"""The ``tradeforge`` command line.

``app`` (the Typer application) and ``main`` are loaded on first use, so a module of this package (the guard of
``tradeforge up``) runs without loading the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradeforge_cli.app import app, main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module("tradeforge_cli.app")
    globals().update(app=module.app, main=module.main)
    return globals()[name]
