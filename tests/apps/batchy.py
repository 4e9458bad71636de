"""An app for the batch tests under fire: members that take a few ms, continuations that record their start."""

from __future__ import annotations

import os
import time

from jobstead import App, Context

app = App()
#: Where continuations append "batch_id event started_at pid attempt" lines.
STARTS_ENV = "JOBSTEAD_TEST_CONTINUATION_STARTS"


@app.handler(max_attempts=10, retry=0)
def member(n: int) -> int:
    time.sleep(0.002)
    return n


@app.handler(max_attempts=10, retry=0)
def continuation(event: str, ctx: Context) -> None:
    with open(os.environ[STARTS_ENV], "a") as out:
        out.write(f"{ctx.batch_id} {event} {time.time():.6f} {os.getpid()} {ctx.attempt}\n")
    time.sleep(0.002)
