"""LISTEN/NOTIFY: an idle worker starts a freshly deferred job within milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, Context

pytestmark = pytest.mark.postgres


def test_idle_worker_starts_a_new_job_within_50ms_without_polling(
    postgres_target: Any, running_worker: Callable[..., Any]
) -> None:
    app = App(postgres_target.url, schema=postgres_target.schema)
    started: dict[int, float] = {}

    @app.handler
    async def ping(ctx: Context) -> None:
        started[ctx.job_id] = time.perf_counter()

    latencies = []
    # poll_interval 60 s: anything faster than that came from NOTIFY, not from polling
    with running_worker(app, poll_interval=60.0):
        time.sleep(0.5)  # LISTEN is set up
        for _ in range(30):
            t0 = time.perf_counter()
            job = ping.defer()
            job.wait(5)
            latencies.append(started[job.id] - t0)
            time.sleep(0.02)
    median = statistics.median(latencies)
    print(f"wake-up latency: median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert median < 0.050
    app.close()
