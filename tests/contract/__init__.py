"""Contracts every implementation keeps: every broker, the fake Binance against the real ccxt client, and the
project's own promises (settings documented, secrets kept out)."""
