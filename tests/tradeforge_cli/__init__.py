"""Tests of the ``tradeforge`` command (``tradeforge_cli/``), bad input included."""
