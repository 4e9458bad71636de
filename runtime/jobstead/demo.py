"""A small app to watch Jobstead work: ``jobstead run --app jobstead.demo:app``.

Uses the embedded default (a SQLite file, ``jobstead.db``, in the working
directory) unless ``JOBSTEAD_DATABASE_URL`` says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from jobstead import App, Context, RetryPolicy

app = App()
log = logging.getLogger("jobstead.demo")


@app.handler(queue="default")
def send_welcome_email(user_id: int, ctx: Context) -> dict[str, Any]:
    """A sync handler: blocking I/O is fine, it runs on a thread of its own."""
    time.sleep(0.2)
    log.info("job %s: welcome email sent to user %s", ctx.job_id, user_id)
    return {"user_id": user_id, "sent": True}


@app.handler(concurrency=2, max_attempts=4, retry=RetryPolicy.exponential(1, cap=8))
async def sync_inventory(warehouse: str, ctx: Context) -> int:
    """An async handler with a global limit of 2, failing now and then to show retries."""
    await asyncio.sleep(0.5)
    if random.random() < 0.3:
        raise ConnectionError(f"warehouse {warehouse} did not answer (attempt {ctx.attempt})")
    items = random.randint(10, 500)
    log.info("job %s: %s synced, %d items", ctx.job_id, warehouse, items)
    return items


@app.handler(timeout=60)
def rebuild_report(pages: int, ctx: Context) -> int:
    """Resumable: progress is checkpointed, so a restarted worker continues where it stopped."""
    done = (ctx.checkpoint_data or {}).get("done", 0)
    for page in range(done, pages):
        if ctx.cancelled:
            return page
        time.sleep(0.3)
        ctx.checkpoint({"done": page + 1})
    log.info("job %s: report of %d pages rebuilt", ctx.job_id, pages)
    return pages


@app.cron("* * * * * */20", name="demo-seed")  # every 20 seconds (seconds are the sixth field)
@app.handler
def seed_demo_jobs(users: int = 3) -> str:
    """Defers a mix of work; the scheduler runs it every 20 seconds, as a cron."""
    send_welcome_email.defer_many([{"user_id": random.randint(1, 10_000)} for _ in range(users)])
    for warehouse in ("north", "south", "east"):
        sync_inventory.defer(warehouse=warehouse)
    rebuild_report.configure(key="nightly-report").defer(pages=5)
    return f"deferred {users + 4} jobs"
