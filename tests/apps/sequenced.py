"""An app with one sequenced handler whose jobs take long enough to be killed mid-run (kill -9 tests).

The database comes from the environment (``JOBSTEAD_DATABASE_URL``,
``JOBSTEAD_SCHEMA``). Attempts are plentiful: a job whose worker is killed
several times must still end succeeded, never dead (a dead job would hold its
sequence, which is another test's subject).
"""

from __future__ import annotations

import random
import time
from typing import Any

from jobstead import App, Context

app = App()


@app.handler(sequence_by="account_id", max_attempts=100, retry=0)
def in_sequence(account_id: str, n: int, ctx: Context) -> dict[str, Any]:
    """One at a time per account, in defer order.

    Each attempt records when it started in the job's checkpoint before it
    does anything (so a killed attempt's start is kept in the database too),
    and the last one returns its start and end. The times are this machine's
    clock, which every worker process shares.
    """
    started = time.time()
    ctx.checkpoint({"starts": [*(ctx.checkpoint_data or {}).get("starts", []), started]})
    time.sleep(random.uniform(0.03, 0.08))
    return {"start": started, "end": time.time()}
