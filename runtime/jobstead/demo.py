"""A small app to watch Jobstead work: ``jobstead run --app jobstead.demo:app``.

Uses the embedded default (a SQLite file, ``jobstead.db``, in the working
directory) unless ``JOBSTEAD_DATABASE_URL`` says otherwise. Its cron defers a
mix of jobs every 20 seconds, among them ``ship-order`` workflows whose steps
show a rate limit and a sequence at work.
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


@app.handler
def fetch_order(order_id: int) -> dict[str, Any]:
    """A workflow's first step: what it returns reaches the steps after it, as ``ctx.upstream``."""
    time.sleep(0.1)
    return {"order_id": order_id, "amount": round(random.uniform(5, 200), 2)}


@app.handler(rate_limit="2/s")
def charge_card(ctx: Context) -> str:
    """Rate-limited like a payment API's quota: at most 2 charges start in any second, across every worker."""
    order = ctx.upstream["fetch"]
    time.sleep(0.1)
    log.info("job %s: order %s charged %.2f", ctx.job_id, order["order_id"], order["amount"])
    return f"charged {order['amount']:.2f}"


@app.handler(sequence_by="sku")
def reserve_stock(sku: str, ctx: Context) -> str:
    """A sequence: reservations of one sku run one at a time, in the order they were deferred."""
    time.sleep(0.2)
    return f"1 x {sku} reserved for order {ctx.upstream['fetch']['order_id']}"


@app.handler
def ship_order(ctx: Context) -> str:
    """Runs once both the charge and the reservation succeeded (a fan-in of two)."""
    log.info("job %s: shipped after %s", ctx.job_id, ", ".join(sorted(ctx.upstream)))
    return "shipped"


def defer_order(order_id: int, sku: str) -> int:
    """A workflow: fetch, then charge and reserve at once, then ship; one transaction defers it all."""
    wf = app.workflow("ship-order", metadata={"order": order_id})
    wf.add("fetch", fetch_order.job(order_id=order_id))
    wf.add("charge", charge_card.job(), after=["fetch"])
    wf.add("reserve", reserve_stock.job(sku=sku), after=["fetch"])
    wf.add("ship", ship_order.job(), after=["charge", "reserve"])
    return wf.defer().id


@app.cron("* * * * * */20", name="demo-seed")  # every 20 seconds (seconds are the sixth field)
@app.handler
def seed_demo_jobs(users: int = 3) -> str:
    """Defers a mix of work; the scheduler runs it every 20 seconds, as a cron."""
    send_welcome_email.defer_many([{"user_id": random.randint(1, 10_000)} for _ in range(users)])
    for warehouse in ("north", "south", "east"):
        sync_inventory.defer(warehouse=warehouse)
    rebuild_report.configure(key="nightly-report").defer(pages=5)
    orders = [random.randint(1000, 9999) for _ in range(2)]
    for order_id in orders:
        defer_order(order_id, sku=random.choice(("mug", "tee")))
    return f"deferred {users + 4} jobs and {len(orders)} ship-order workflows"
