"""An app whose flow-controlled handlers report when and where they ran, for multi-process tests.

The database comes from the environment (``JOBSTEAD_DATABASE_URL``,
``JOBSTEAD_SCHEMA``) so each test points its worker processes at its own schema.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from jobstead import App, Context

app = App()


@app.handler(concurrency=5, concurrency_by="customer_id", concurrency_per_key=2)
def per_customer(customer_id: str | None, i: int) -> dict[str, Any]:
    """At most 2 running per customer and 5 in all: the test samples the database meanwhile."""
    started = time.time()
    time.sleep(0.02)
    return {"pid": os.getpid(), "start": started, "end": time.time(), "customer_id": customer_id}


app.rate_limit("stripe", "10/s")


@app.handler(rate_limit="25/s")
def rated(i: int) -> None:
    """At most 25 starts in any second, across every worker."""


@app.handler(rate_limits=["stripe"])
def charge(i: int) -> None:
    """Counts against the shared "stripe" limit..."""


@app.handler(rate_limits=["stripe"])
def refund(i: int) -> None:
    """...together with charge."""


@app.handler(sequence_by="account_id")
def in_order(account_id: str, n: int, ctx: Context) -> dict[str, Any]:
    """One at a time per account, in defer order: the test checks the recorded spans."""
    started = time.time()
    time.sleep(random.uniform(0.002, 0.02))
    return {"pid": os.getpid(), "start": started, "end": time.time(), "job": ctx.job_id}


@app.handler(rate_limit="5/s", rate_limit_by="customer_id")
def per_customer_rate(customer_id: str, i: int) -> None:
    """At most 5 starts per customer in any second."""


@app.handler(fair_by="tenant")
def shared_fairly(n: int) -> None:
    """Round robin between tenants with a backlog."""
    time.sleep(0.005)
