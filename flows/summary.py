"""``daily-summary``: per strategy sleeve PnL, trades, win rate and breaker events for the last UTC day, with an
equity chart; stored under ``<data_dir>/reports/<date>/`` and sent to Telegram (message and chart) when a bot
token is configured. A summary Telegram did not take (unreachable, or answering an error) fails the run, after
the summary was stored; without a token nothing is sent and the run completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import IO_RETRIES, NO_CACHING, JobNotDone, clock, report_failure, say, settings, telegram
from pipeline.reports.summary import daily_summary, parse_day, summary_text, write_summary
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
    sender = telegram(settings())
    if not sender.enabled:
        return {"sent": False, "reason": "telegram is not configured (no token or no chat ids): summary not sent"}
    messages = sender.deliver_message(text)
    photos = sender.deliver_photo(Path(chart).read_bytes(), caption=text.splitlines()[0])
    problems = [f"{what} to chat {chat}: {problem}" for what, outcome in (("message", messages), ("chart", photos))
                for chat, problem in outcome.items() if problem]
    return {"sent": not problems, "messages": {chat: p is None for chat, p in messages.items()},
            "photos": {chat: p is None for chat, p in photos.items()}, "problems": problems}


@flow(name="daily-summary", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def daily_summary_flow(day: str | None = None) -> dict[str, Any]:
    """Summarise ``day`` (YYYY-MM-DD, UTC; default: yesterday), store it and send it."""
    result = summary_task(day)
    say(result["text"])
    delivery = telegram_task(result["text"], result["chart"])
    result["telegram"] = delivery
    if delivery.get("problems"):
        raise JobNotDone(f"the summary of {result['summary']['day']} is stored in {result['folder']} but Telegram "
                         "did not take it: " + "; ".join(delivery["problems"]))
    say(delivery.get("reason") or f"sent to telegram: {delivery}")
    return result
