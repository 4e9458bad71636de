"""An app for the metrics tests: a job that succeeds, one that always fails, one that runs long."""

from __future__ import annotations

import os
import time

from jobstead import App, Context

app = App()


@app.handler(queue="fast")
def ok(n: int) -> int:
    return n


@app.handler(queue="fast", max_attempts=2, retry=0)
def boom(n: int) -> None:
    raise RuntimeError(f"boom {n}")


@app.handler(queue="slow")
def long_job(seconds: float, ctx: Context) -> None:
    ctx.checkpoint({"pid": os.getpid()})
    time.sleep(seconds)
