"""The bot's HTTP API (FastAPI, served by uvicorn): the runtime's state, the same the dashboard shows, and its
control commands, through the same state store.

``python -m runtime.api`` serves it at the setting ``api_url``; ``tradeforge up`` starts it with the platform.
Where things live: ``app`` (``create_app``), ``auth`` (the bearer token), ``state`` (the store, opened on first
use), ``reads`` (status, trades, candles, equity, positions, breakers), ``control`` (pause, resume, flatten,
reset-breaker, stop and their acknowledgements), ``pusher`` (the ``/ws`` websocket), ``schemas`` (the response
models and messages) and ``server`` (uvicorn). The read queries themselves are in :mod:`pipeline.reports.api`.
"""
