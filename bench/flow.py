"""Flow control's price: drains of limited handlers beside the unlimited drain of the same run.

``python -m bench.flow`` (sizes from ``bench.config``: ``BENCH_JOBS``,
``BENCH_REPS``, ``BENCH_PROCESSES``; ``BENCH_QUICK=1`` for a short run) prints
one row per control with its rate and its ratio to the unlimited drain. Runs
alternate between the systems, so a change in machine load hits them alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .harness import Harness
from .probe import open_collector
from .systems.jobstead import Jobstead

#: (row label, global concurrency limit) of each drain measured.
CONTROLS: tuple[tuple[str, int | None], ...] = (
    ("no limit", None),
    ("global limit 8", 8),
    ("global limit 100", 100),
)


async def measure(
    server: PostgresServer, harness: Harness, settings: Settings, say: Callable[[str], None]
) -> dict[str, list[float]]:
    """Drain rates (jobs/s) per control, ``settings.reps`` each."""
    systems = [
        (label, Jobstead(server.create_database(f"flow_{i}"), limit=limit)) for i, (label, limit) in enumerate(CONTROLS)
    ]
    for _, system in systems:
        await system.open()
    rates: dict[str, list[float]] = {}
    try:
        for rep in range(settings.reps):
            for label, system in systems:
                r = await harness.drain(
                    system,
                    processes=settings.processes,
                    jobs=settings.jobs,
                    cap=settings.drain_cap * 4,
                    label=f"flow-{label.replace(' ', '-')}",
                )
                rates.setdefault(label, []).append(r.rate)
                say(f"{label}, run {rep + 1}/{settings.reps}: {r.rate:,.0f} jobs/s{' (capped)' if r.capped else ''}")
    finally:
        for _, system in systems:
            await system.close()
    return rates


def table(rates: dict[str, list[float]], settings: Settings) -> str:
    free = statistics.median(rates[CONTROLS[0][0]])
    lines = [
        f"| Drain {settings.jobs:,} no-op jobs, {settings.processes} processes | jobs/s | vs no limit |",
        "|---|---:|---:|",
    ]
    for label, _ in CONTROLS:
        rate = statistics.median(rates[label])
        lines.append(f"| {label} | {rate:,.0f} | {rate / free:.2f}x |")
    return "\n".join(lines)


async def main() -> int:
    settings = Settings.from_env()
    server = PostgresServer(durable=True).start()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    try:
        rates = await measure(server, harness, settings, lambda line: print(line, flush=True))
        print(table(rates, settings))
    finally:
        await harness.close()
        transport.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
