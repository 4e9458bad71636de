"""``python -m bench.batches``: listing a tenant's batches when it has 100,000 batch jobs (issue 14: < 50 ms).

One throwaway PostgreSQL server (durable settings as in production) and a
SQLite file; 1,000 batches of 100 jobs for the tenant, plus another tenant's
batches beside them; then the median and p95 of ``list_batches(tenant=...,
limit=25)`` (statistics and continuations included) and of
``tenant_stats(tenant)``, over 30 runs each.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobstead.store import NewJob, Store
from tests.support.postgres_server import PostgresServer

BATCHES, SIZE, RUNS = 1000, 100, 30


def fill(store: Store) -> None:
    store.migrate()
    for tenant, count in (("acme", BATCHES), ("globex", BATCHES // 10)):
        for b in range(count):
            jobs = [NewJob(handler="resize", args={"image": b * SIZE + i}, queue="default") for i in range(SIZE)]
            store.batches.create(jobs, tenant=tenant, continuations={"finish": NewJob("notify", {}, "default")})


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(RUNS * 0.95) - 1]


def measure(name: str, store: Store) -> None:
    t0 = time.perf_counter()
    fill(store)
    filled = time.perf_counter() - t0
    listing = timed(lambda: store.batches.list_batches(tenant="acme", limit=25))
    stats = timed(lambda: store.batches.tenant_stats("acme"))
    print(
        f"{name:<11} {BATCHES * SIZE:>7} batch jobs of the tenant (filled in {filled:.0f} s): "
        f"list 25 batches p50 {listing[0]:.1f} ms p95 {listing[1]:.1f} ms; "
        f"tenant stats p50 {stats[0]:.1f} ms p95 {stats[1]:.1f} ms"
    )


def main() -> None:
    server = PostgresServer(durable=True).start()
    try:
        store = Store.connect(server.create_database("bench_batches"))
        measure("PostgreSQL", store)
        store.close()
    finally:
        server.cleanup()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.connect(f"sqlite:///{Path(tmp) / 'batches.db'}")
        measure("SQLite", store)
        store.close()


if __name__ == "__main__":
    main()
