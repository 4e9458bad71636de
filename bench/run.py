"""``python -m bench``: every measurement, every system, one PostgreSQL server, one report.

Order: for each measurement, each repetition runs Jobstead, pgqueuer,
procrastinate, oban and chancy back to back (one after another, never at the same time), so a
change in machine load during the run hits every system alike instead of
whichever happened to run last. Each system has its own fresh database on the
same durable server (fsync and synchronous_commit on, as in production).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from tests.support.postgres_server import PostgresServer, pg_bindir

from . import ceiling, flow, history, machine, mariadb, report, scale, steady, workflows
from .config import Settings
from .harness import Harness, percentile
from .probe import open_collector
from .systems import System
from .systems.chancy import ChancySystem
from .systems.jobstead import Jobstead, JobsteadIO
from .systems.oban import Oban
from .systems.pgqueuer import PgQueuer
from .systems.procrastinate import Procrastinate

Figures = dict[str, dict[str, list[float]]]


class Progress:
    """Progress lines, flushed at once, with the elapsed time and other work's share of the CPU."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.cpu = machine.CpuMeter()

    def __call__(self, message: str) -> None:
        others = self.cpu.sample()
        elapsed = time.monotonic() - self.started
        busy = "  -- " if others is None else f"{others:4.0%}"
        print(f"[{elapsed // 60:02.0f}:{elapsed % 60:04.1f} others {busy}] {message}", flush=True)


async def main() -> int:
    settings = Settings.from_env()
    say = Progress()
    say(f"settings: {settings}")
    server = PostgresServer(durable=True).start()
    say(f"PostgreSQL on 127.0.0.1:{server.port} (durable), data in {server.root}")
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    figures: Figures = {}
    extra: dict[str, Any] = {}
    try:
        kinds: dict[str, type[System]] = {
            "jobstead": Jobstead,
            "pgqueuer": PgQueuer,
            "procrastinate": Procrastinate,
            "oban": Oban,
            "chancy": ChancySystem,
        }
        systems: list[System] = [kinds[name](server.create_database(name)) for name in settings.systems]
        for s in systems:
            await s.open()
        facts = await machine.describe(systems[0].url)
        facts["load_start"] = machine.load()

        def record(metric: str, system: str, value: float) -> None:
            figures.setdefault(metric, {}).setdefault(system, []).append(value)

        async def each(title: str, measure: Callable[[System, int], Awaitable[None]]) -> None:
            for rep in range(settings.reps):
                for s in systems:
                    say(f"{title}: {s.name}, run {rep + 1}/{settings.reps}")
                    await measure(s, rep)

        async def single(s: System, rep: int) -> None:
            record("enqueue_single", s.name, await harness.enqueue_single(s, settings.single))

        async def bulk(s: System, rep: int) -> None:
            record("enqueue_bulk", s.name, await harness.enqueue_bulk(s, settings.jobs))

        def drain_with(processes: int) -> Callable[[System, int], Awaitable[None]]:
            async def drain(s: System, rep: int) -> None:
                r = await harness.drain(
                    s, processes=processes, jobs=settings.jobs, cap=settings.drain_cap, label=f"{s.name}-{processes}p"
                )
                record(f"drain_{processes}", s.name, r.rate)
                extra.setdefault(f"drain_{processes}", {}).setdefault(s.name, []).append(asdict(r))
                say(f"  {r.rate:,.0f} jobs/s ({r.done} jobs in {r.seconds:.2f} s{', capped' if r.capped else ''})")

            return drain

        async def latency(s: System, rep: int) -> None:
            delays = await harness.latency(
                s,
                rate=settings.latency_rate,
                seconds=settings.latency_seconds,
                warmup=settings.latency_warmup,
                label=f"{s.name}-latency",
            )
            for q in (50, 95, 99):
                record(f"latency_p{q}", s.name, percentile(delays, q) * 1000)
            say(f"  p50 {percentile(delays, 50) * 1000:.1f} ms, p99 {percentile(delays, 99) * 1000:.1f} ms")

        await each("enqueue, one job per transaction", single)
        await each(f"enqueue, bulk {settings.jobs:,}", bulk)
        await each(f"drain {settings.jobs:,}, 1 process", drain_with(1))
        await each(f"drain {settings.jobs:,}, {settings.processes} processes", drain_with(settings.processes))
        await each(f"latency at {settings.latency_rate:.0f}/s for {settings.latency_seconds:.0f} s", latency)

        if "jobstead" in settings.systems:
            await jobstead_only(server, harness, settings, say, record, extra)
            say("Jobstead: steady state, 5-15 ms jobs deferred at 50%, 90%, 120% of capacity")
            io = JobsteadIO(server.create_database("jobstead_io"))
            await io.open()
            extra["steady"] = await steady.measure(
                harness,
                io,
                processes=settings.processes,
                warmup=settings.steady_warmup,
                seconds=settings.steady_seconds,
                say=say,
            )
            await io.close()
            # Scale with the work: the spread drain always, the deep queue and the long history
            # with BENCH_SCALE=1 (about 13 more minutes; ``python -m bench.scale`` runs them alone).
            parts = scale.PARTS if settings.scale else ("spread",)
            await scale.measure(harness, server.create_database, settings, parts, say, record, extra)
            say("Jobstead: workflows (release latency, a chain, a fan-out and fan-in, a big defer)")
            sizes = workflows.Sizes.quick(settings.processes) if settings.quick else workflows.Sizes()
            sizes = workflows.Sizes(**{**asdict(sizes), "processes": settings.processes})
            url = server.create_database("jobstead_workflows")
            extra["workflows"] = await asyncio.to_thread(workflows.measure, url, sizes, say)
        await database_ceiling(server, settings, say, record)
        versions = {s.name: s.version for s in systems}
        if settings.mariadb:
            versions.update(await mariadb.measure(harness, settings, say, record, extra))

        for s in systems:
            await s.close()
        facts["load_end"] = machine.load()
        facts["others_cpu"] = round(say.cpu.overall(), 3)
        facts["others_cpu_peak"] = round(say.cpu.peak, 3)
        facts["minutes"] = round((time.monotonic() - say.started) / 60, 1)
        results = {
            "machine": facts,
            "settings": asdict(settings),
            "versions": versions,
            "configuration": {s.name: s.configuration for s in systems},
            "figures": figures,
            "runs": extra,
        }
        path = report.write(results)
        say(f"raw results in {path}")
        print()
        print(report.render(results))
        return 0
    finally:
        await harness.close()
        transport.close()
        server.cleanup()


async def jobstead_only(
    server: PostgresServer,
    harness: Harness,
    settings: Settings,
    say: Progress,
    record: Callable[[str, str, float], None],
    extra: dict[str, Any],
) -> None:
    """Claim cost against table size, and the price of a global concurrency limit."""
    processes = settings.processes
    # Two databases, runs alternating small/large, so a change in machine load
    # during this section hits both sizes alike (the target is a 10% difference).
    tables: list[tuple[str, Jobstead, int]] = []
    for metric, finished in (("history_small", settings.history_small), ("history_large", settings.history_large)):
        system = Jobstead(server.create_database(f"jobstead_{metric}"))
        await system.open()
        say(f"Jobstead: writing {finished:,} finished jobs")
        tables.append((metric, system, await history.fill(harness, system, finished)))
    for rep in range(settings.reps):
        for metric, system, watermark in tables:
            finished = settings.history_small if metric == "history_small" else settings.history_large
            say(f"Jobstead: drain {settings.jobs:,} with {finished:,} finished jobs, run {rep + 1}/{settings.reps}")
            if rep:
                await history.back_to(harness, system, watermark)
            r = await harness.drain(
                system,
                processes=processes,
                jobs=settings.jobs,
                cap=settings.drain_cap,
                label=f"jobstead-{metric}",
                reset=False,
            )
            record(metric, "jobstead", r.rate)
            extra.setdefault(metric, {}).setdefault("jobstead", []).append(asdict(r))
            say(f"  {r.rate:,.0f} jobs/s")
    for _, system, _ in tables:
        await system.close()

    # Pooler mode (PgBouncer in transaction mode needs prepared statements off): the same
    # drain with ``?prepare_threshold=none``, alternating with a plain one on its own database.
    plain = Jobstead(server.create_database("jobstead_plain"))
    pooler = Jobstead(server.create_database("jobstead_pooler") + "?prepare_threshold=none")
    for system in (plain, pooler):
        await system.open()
    for rep in range(settings.reps):
        for metric, system in (("plain", plain), ("pooler", pooler)):
            say(f"Jobstead: drain {settings.jobs:,}, {metric} connections, run {rep + 1}/{settings.reps}")
            r = await harness.drain(
                system, processes=processes, jobs=settings.jobs, cap=settings.drain_cap, label=f"jobstead-{metric}"
            )
            record(metric, "jobstead", r.rate)
            extra.setdefault(metric, {}).setdefault("jobstead", []).append(asdict(r))
            say(f"  {r.rate:,.0f} jobs/s")
    for system in (plain, pooler):
        await system.close()

    # Flow control (the global limit among them): each control beside an unlimited drain of
    # the same run, runs alternating (``bench.flow``).
    found = await flow.measure(server, harness, settings, lambda line: say(f"Jobstead flow control: {line}"))
    extra["flow"] = flow.results(found)
    limited = next((c for c in found if c.label == f"global limit {settings.limit}"), None)
    for rate in limited.rates if limited is not None else ():
        record("limited", "jobstead", rate)


async def database_ceiling(
    server: PostgresServer, settings: Settings, say: Progress, record: Callable[[str, str, float], None]
) -> None:
    url = server.create_database("ceiling")
    for rep in range(settings.reps):
        for clients in (1, settings.processes):
            await ceiling.prepare(url)
            say(f"pgbench one-row INSERT, {clients} client(s), run {rep + 1}/{settings.reps}")
            tps = await ceiling.pgbench(
                pg_bindir(),
                host="127.0.0.1",
                port=server.port,
                user=server.user,
                database="ceiling",
                clients=clients,
                seconds=settings.pgbench_seconds,
            )
            record(f"pgbench_{clients}", "postgres", tps)
            say(f"  {tps:,.0f} commits/s")


def run() -> None:
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
