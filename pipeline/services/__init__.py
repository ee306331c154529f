"""Clients of the services tradeforge talks to besides the venues: Telegram's Bot API and Prefect's REST API."""
