"""``python -m bench.tune``: measure each system's throughput knob, to pick the value ``make bench`` uses.

Each system is run the way its documentation recommends for throughput, but the
documents name a knob rather than a value (pgqueuer: raise ``batch_size`` for
short jobs; procrastinate: concurrency with a pool of concurrency + 1; Jobstead:
worker concurrency, which is also its claim batch). This drains the same jobs
with each candidate value and prints the medians, so the choice in
``bench/systems/*.py`` is a measured one. Not part of ``make bench``.

``BENCH_TUNE=jobstead,pgqueuer`` limits the systems; sizes come from ``bench.config``.
"""

from __future__ import annotations

import asyncio
import os
import statistics

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .harness import Harness
from .probe import open_collector
from .systems import System
from .systems.chancy import ChancySystem
from .systems.jobstead import Jobstead
from .systems.oban import Oban
from .systems.pgqueuer import PgQueuer
from .systems.procrastinate import Procrastinate

CANDIDATES: dict[type[System], list[int]] = {
    Jobstead: [100, 200, 500, 1000, 2000],
    PgQueuer: [50, 100, 200, 500, 1000, 2000],
    # 4 processes x (concurrency + 1) connections must stay under max_connections (400)
    Procrastinate: [10, 30, 60],
    Oban: [50, 100, 200, 500, 1000, 2000],
    ChancySystem: [50, 100, 200, 500, 1000],
}


async def main() -> None:
    settings = Settings.from_env()
    wanted = set(filter(None, os.environ.get("BENCH_TUNE", "").split(","))) or {c.name for c in CANDIDATES}
    server = PostgresServer(durable=True).start()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    try:
        for cls, values in CANDIDATES.items():
            if cls.name not in wanted:
                continue
            system = cls(server.create_database(cls.name))
            await system.open()
            for processes in (1, settings.processes):
                for value in values:
                    system.knob_value = value
                    rates = []
                    for _ in range(settings.reps):
                        r = await harness.drain(
                            system, processes=processes, jobs=settings.jobs, cap=settings.drain_cap, label="tune"
                        )
                        rates.append(r.rate)
                    print(
                        f"{cls.name:14} {processes} process(es) {system.knob} {value:4}: "
                        f"median {statistics.median(rates):8,.0f} jobs/s  runs {[round(x) for x in rates]}",
                        flush=True,
                    )
            await system.close()
    finally:
        await harness.close()
        transport.close()
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
