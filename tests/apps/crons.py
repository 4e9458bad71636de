"""An app with a per-second cron, for tests of ``jobstead run`` and ``jobstead scheduler``.

The database comes from the environment (``JOBSTEAD_DATABASE_URL``,
``JOBSTEAD_SCHEMA``), so each test points its processes at its own schema.
"""

from __future__ import annotations

from jobstead import App, Context

app = App()


@app.cron("* * * * * *", name="heartbeat")
def beat(ctx: Context) -> str:
    """Returns the fire time it was deferred for, which the test compares with the job's."""
    return str(ctx.metadata.get("cron_fire_at"))
