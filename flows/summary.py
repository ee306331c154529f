"""``daily-summary``: per strategy sleeve PnL, trades, win rate and breaker events for the last UTC day, with an
equity chart; stored under ``<data_dir>/reports/<date>/`` and sent to Telegram (message and chart) when a bot
token is configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import IO_RETRIES, NO_CACHING, clock, say, settings
from pipeline.reports.summary import daily_summary, parse_day, summary_text, write_summary
from pipeline.services.telegram import TelegramSender
from pipeline.state import StateStore


@task(name="summarise-day", cache_policy=NO_CACHING, timeout_seconds=900)
def summary_task(day: str | None) -> dict[str, Any]:
    config = settings()
    with StateStore.read_only(config.state_url) as store:
        summary = daily_summary(store, parse_day(day, clock().now().to_pydatetime()))
    stored = write_summary(summary, config.data_dir)
    return {"summary": summary.to_json(), "text": summary_text(summary), "folder": str(stored.folder),
            "chart": str(stored.chart_path)}


@task(name="send-to-telegram", retries=IO_RETRIES, retry_delay_seconds=30, cache_policy=NO_CACHING,
      timeout_seconds=600)
def telegram_task(text: str, chart: str) -> dict[str, Any]:
    config = settings()
    sender = TelegramSender(config.telegram_token, config.telegram_chat_ids, config.telegram_api_url,
                            config.telegram_rate_per_minute, timeout_s=config.http_timeout_s,
                            max_retries=config.max_retries, backoff_s=config.retry_backoff_s)
    if not sender.enabled:
        return {"sent": False, "reason": "telegram is not configured (no token or no chat ids): summary not sent"}
    messages = sender.send_message(text)
    photos = sender.send_photo(Path(chart).read_bytes(), caption=text.splitlines()[0])
    return {"sent": all(messages.values()) and all(photos.values()), "messages": messages, "photos": photos}


@flow(name="daily-summary", log_prints=True)
def daily_summary_flow(day: str | None = None) -> dict[str, Any]:
    """Summarise ``day`` (YYYY-MM-DD, UTC; default: yesterday), store it and send it."""
    result = summary_task(day)
    say(result["text"])
    delivery = telegram_task(result["text"], result["chart"])
    say(delivery.get("reason") or f"sent to telegram: {delivery}")
    result["telegram"] = delivery
    return result
