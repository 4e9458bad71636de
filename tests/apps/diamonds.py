"""An app for the workflow test under fire: steps that record when they start, a root that grows its workflow."""

from __future__ import annotations

import os
import random
import time

from jobstead import App, Context

app = App()
#: Where steps and continuations append "workflow_id step-or-event started_at pid attempt" lines.
STARTS_ENV = "JOBSTEAD_TEST_WORKFLOW_STARTS"


def _record(ctx: Context, what: str) -> None:
    with open(os.environ[STARTS_ENV], "a") as out:
        out.write(f"{ctx.workflow_id} {what} {time.time():.6f} {os.getpid()} {ctx.attempt}\n")


@app.handler(max_attempts=20, retry=0)
def step(n: int, ctx: Context) -> int:
    _record(ctx, ctx.step or "?")
    time.sleep(random.uniform(0.05, 0.25))
    return n


@app.handler(max_attempts=20, retry=0)
def root(ctx: Context) -> str:
    """Adds one step (after itself, before the join): written with its success, once."""
    _record(ctx, ctx.step or "?")
    ctx.add_steps([("extra", step.job(n=99), ["root"])], before=["join"])
    time.sleep(random.uniform(0.05, 0.25))
    return "root"


@app.handler(max_attempts=20, retry=0)
def continuation(event: str, ctx: Context) -> None:
    _record(ctx, f"on_{event}")
