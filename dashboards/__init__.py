"""tradeforge dashboards (filled by later work; see README)."""
