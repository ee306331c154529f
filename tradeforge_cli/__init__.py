"""The ``tradeforge`` command line."""

from tradeforge_cli.app import app, main

__all__ = ["app", "main"]
