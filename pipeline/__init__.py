"""tradeforge's library: domain, data, features, models, strategies, engine, risk, state, reports."""
