"""An app whose handlers report when and where they ran, for multi-process tests.

The database comes from the environment (``JOBSTEAD_DATABASE_URL``,
``JOBSTEAD_SCHEMA``) so each test points its worker processes at its own schema.
"""

from __future__ import annotations

import os
import time
from typing import Any

from jobstead import App, Context

app = App()


def _span(started: float) -> dict[str, Any]:
    # pod: a worker Pod's name (the operator sets JOBSTEAD_POD_NAME); in a container every pid is 1.
    return {"pid": os.getpid(), "pod": os.environ.get("JOBSTEAD_POD_NAME"), "start": started, "end": time.time()}


@app.handler(concurrency=3)
def limited(i: int) -> dict[str, Any]:
    """Global limit 3: the test measures how many ran at once across processes."""
    started = time.time()
    time.sleep(0.02)
    return _span(started)


@app.handler(max_attempts=3, retry=0)
def long_task(seconds: float, ctx: Context) -> dict[str, Any]:
    """Announces itself (pid, start) in its checkpoint, so a test can kill -9 it mid-job."""
    started = time.time()
    ctx.checkpoint({"pid": os.getpid(), "start": started, "attempt": ctx.attempt})
    time.sleep(seconds)
    return _span(started)


@app.handler(max_attempts=5, retry=0)
def units(count: int, log_path: str, ctx: Context) -> dict[str, Any]:
    """Resumable work: each unit is logged to a file, then checkpointed.

    The "work" of a unit is the sleep; logging and checkpointing follow it at
    once, so an interruption lands inside the work, not between the two writes.
    """
    done = (ctx.checkpoint_data or {}).get("next", 0)
    for unit in range(done, count):
        if ctx.wait_cancelled(0.15):
            return {"stopped_at": unit}
        with open(log_path, "a") as log:
            log.write(f"{unit} {os.getpid()} {ctx.attempt}\n")
        ctx.checkpoint({"next": unit + 1, "pid": os.getpid()})
    return {"units": count, "attempt": ctx.attempt}


@app.handler
def e2e_work(i: int) -> dict[str, Any]:
    """The JobHandler e2e tests' work: short, and reports when and where it ran."""
    started = time.time()
    time.sleep(0.05)
    return _span(started)


@app.handler
def e2e_long(seconds: float) -> dict[str, Any]:
    """A job that takes a while: for scale-down and pod-loss tests."""
    started = time.time()
    time.sleep(seconds)
    return _span(started)
