"""The commands of ``tradeforge``, one module per command group; ``tradeforge_cli.app`` assembles them.

* ``data``: ``ingest``, ``data health``, ``data sql``;
* ``backtest``: ``backtest`` (one strategy, or a portfolio file);
* ``models``: ``features build``, ``train``, ``models list|promote|rollback``;
* ``runtime``: ``runtime`` (the trading runtime, wired by ``runtime.wiring``) and ``runtime ctl``;
* ``platform``: ``up``, ``config show|env-example|table``, ``doctor``;
* ``output`` and ``options``: what every command shares (consoles, tables, JSON, errors; common options).

A command parses its options, calls ``pipeline`` (or ``runtime``) and renders the result. Modules a command needs
are imported inside it, so ``tradeforge --help`` and every command start without the others' imports.
"""
