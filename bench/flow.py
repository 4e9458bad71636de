"""Flow control's price: drains under each control beside the unlimited drain of the same run.

``python -m bench.flow`` (sizes from ``bench.config``: ``BENCH_JOBS``,
``BENCH_REPS``, ``BENCH_PROCESSES``; ``BENCH_QUICK=1`` for a short run;
``BENCH_FLOW_RATE_JOBS`` for the rate row, which takes jobs / 200 seconds;
``BENCH_FLOW_ONLY=sequences,rate`` for some rows only)
prints one row per control with its rate and its ratio to what it is judged
against: the unlimited drain of the same run, or for the limit with 10 ms jobs
the 800 jobs/s its 8 slots allow, and for the rate its 200/s (with the most
starts in any 1 s window, from the recorded start times). ``make bench`` runs
the same rows (``measure``, ``render``).
Runs alternate between the controls, so a change in machine load hits them alike.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .harness import Harness
from .probe import open_collector
from .systems.jobstead import Jobstead, build_app


class FlowJobstead(Jobstead):
    """The no-op drain with flow control options on ``noop``, its jobs spread over ``keys`` keys."""

    def __init__(
        self,
        url: str,
        *,
        limit: int | None = None,
        flow: dict[str, Any] | None = None,
        keys: int = 0,
        pause: float = 0.0,
        pause_spread: float = 0.0,
    ) -> None:
        super().__init__(url, limit=limit)
        self.flow = flow or {}
        self.keys = keys
        #: Seconds each job waits (``noop``'s ``pause``): 0, a no-op job.
        self.pause = pause
        #: The pauses spread evenly over ``pause`` +/- ``pause_spread`` seconds (the same mean): jobs
        #: that end at different times, as real jobs do, not all of a claim's together.
        self.pause_spread = pause_spread

    async def open(self) -> None:
        self._app = build_app(self.url, limit=self.limit, flow=self.flow)
        self._noop = self._app.get_handler("noop")
        await asyncio.to_thread(lambda: self._app and self._app.store)

    async def defer_bulk(self, n: int) -> None:
        if not self.keys and not self.pause:
            await super().defer_bulk(n)
            return
        keyed = [{"key": f"k{i % self.keys}"} for i in range(self.keys)] if self.keys else [{}]
        self._noop.defer_many([{"t": 0.0, **self._paused(i), **keyed[i % len(keyed)]} for i in range(n)])

    def _paused(self, i: int) -> dict[str, float]:
        """Job ``i``'s ``pause`` argument, if it has one: 101 steps across the spread, in a shuffled order."""
        if not self.pause:
            return {}
        step = (i * 37) % 101  # 37 is prime to 101: each step once per 101 jobs, neighbours far apart
        return {"pause": self.pause + self.pause_spread * (step / 50 - 1)}

    def worker_options(self) -> list[str]:
        return super().worker_options() + (["--flow", json.dumps(self.flow)] if self.flow else [])

    def most_starts_in(self, seconds: float) -> int:
        """The most starts in any window of ``seconds`` (from the jobs' recorded start times)."""
        jobs = self.app.store.tables.jobs
        with self.app.store.db.engine.connect() as conn:
            starts = sorted(t.timestamp() for t in conn.execute(select(jobs.c.started_at)).scalars() if t)
        return max((bisect.bisect_left(starts, s + seconds) - i for i, s in enumerate(starts)), default=0)


@dataclass
class Control:
    label: str
    make: Callable[[str], FlowJobstead]
    jobs: int | None = None  # None: settings.jobs
    #: What its rate is judged against (jobs/s), if not the unlimited drain of the same run.
    allowed: float | None = None
    rates: list[float] = field(default_factory=list)
    note: str = ""


def controls(settings: Settings) -> list[Control]:
    rate_jobs = int(os.environ.get("BENCH_FLOW_RATE_JOBS", "2000" if settings.quick else "12000"))
    only = [name.strip() for name in os.environ.get("BENCH_FLOW_ONLY", "").split(",") if name.strip()]
    return [c for c in _controls(rate_jobs) if not only or c.label == "no limit" or any(o in c.label for o in only)]


def _controls(rate_jobs: int) -> list[Control]:
    return [
        Control("no limit", lambda url: FlowJobstead(url)),
        Control("global limit 8", lambda url: FlowJobstead(url, limit=8)),
        Control("global limit 100", lambda url: FlowJobstead(url, limit=100)),
        Control(
            "global limit 8, 10 ms jobs (vs the 800/s it allows)",
            lambda url: FlowJobstead(url, limit=8, pause=0.01),
            jobs=4000,
            allowed=800,
        ),
        Control(
            "global limit 8, 5-15 ms jobs (vs the 800/s it allows)",
            lambda url: FlowJobstead(url, limit=8, pause=0.01, pause_spread=0.005),
            jobs=4000,
            allowed=800,
        ),
        Control(
            "2 per key, 100 keys, global limit 100",
            lambda url: FlowJobstead(
                url, limit=100, flow={"concurrency_by": "key", "concurrency_per_key": 2}, keys=100
            ),
        ),
        Control(
            "rate limit 200/s (vs 200/s)",
            lambda url: FlowJobstead(url, flow={"rate_limit": "200/s"}),
            jobs=rate_jobs,
            allowed=200,
        ),
        Control(
            "sequences, 100 keys x 100 jobs",
            lambda url: FlowJobstead(url, flow={"sequence_by": "key"}, keys=100),
            jobs=10_000,
        ),
        Control("fair sharing, 3 keys", lambda url: FlowJobstead(url, flow={"fair_by": "key"}, keys=3)),
    ]


async def measure(
    server: PostgresServer, harness: Harness, settings: Settings, say: Callable[[str], None]
) -> list[Control]:
    """Drain rates (jobs/s) per control, ``settings.reps`` each."""
    found = controls(settings)
    systems = [(c, c.make(server.create_database(f"flow_{i}"))) for i, c in enumerate(found)]
    for _, system in systems:
        await system.open()
    try:
        for rep in range(settings.reps):
            for control, system in systems:
                jobs = control.jobs or settings.jobs
                r = await harness.drain(
                    system,
                    processes=settings.processes,
                    jobs=jobs,
                    cap=max(settings.drain_cap * 4, jobs / 150),
                    label=f"flow-{control.label.replace(' ', '-').replace(',', '').replace('/', '-')}",
                )
                control.rates.append(r.rate)
                if control.label.startswith("rate limit"):
                    most = max(system.most_starts_in(1.0), int(control.note.rsplit(" ", 1)[-1] or 0))
                    control.note = f"most starts in any 1 s: {most}"
                capped = " (capped)" if r.capped else ""
                say(f"{control.label}, run {rep + 1}/{settings.reps}: {r.rate:,.0f} jobs/s{capped}")
    finally:
        for _, system in systems:
            await system.close()
    return found


def table(found: list[Control], settings: Settings) -> str:
    return "\n".join(render(results(found), settings.jobs, settings.processes)[1:])


def results(found: list[Control]) -> list[dict[str, Any]]:
    """The rows as ``make bench`` keeps them in its raw results (``render`` reads them back)."""
    return [{"label": c.label, "jobs": c.jobs, "allowed": c.allowed, "rates": c.rates, "note": c.note} for c in found]


def render(rows: list[dict[str, Any]], jobs: int, processes: int) -> list[str]:
    """One row per control: its median drain rate and its ratio to what it is judged against."""
    free = statistics.median(rows[0]["rates"])
    lines = [
        "",
        f"| Flow control (`bench/flow.py`): drain {jobs:,} jobs, {processes} processes | jobs/s | ratio | |",
        "|---|--:|--:|---|",
    ]
    for row in rows:
        rate = statistics.median(row["rates"])
        against = row["allowed"] or free
        size = f" ({row['jobs']:,} jobs)" if row["jobs"] else ""
        lines.append(f"| {row['label']}{size} | {rate:,.0f} | {rate / against:.2f}x | {row['note']} |")
    return lines


async def main() -> int:
    settings = Settings.from_env()
    server = PostgresServer(durable=True).start()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    try:
        found = await measure(server, harness, settings, lambda line: print(line, flush=True))
        print(table(found, settings))
    finally:
        await harness.close()
        transport.close()
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
