"""``python -m bench.versions BEFORE AFTER``: Jobstead's own rows for two checkouts, interleaved.

A refactor must not cost speed, and one ``make bench`` of each version an hour
apart cannot show a 5% difference on a machine whose load moves by more than
that. This runs the Jobstead rows of ``make bench`` (defer one, bulk defer, the
drains, latency, the global limit, CPU per job) for two checkouts of the
repository on one PostgreSQL server, alternating: before, after, before,
after... (``BENCH_PAIRS`` pairs, default 2), each run a fresh process whose
``PYTHONPATH`` puts that checkout's ``runtime/`` first, so the harness, the
worker processes and the job code are the same and only Jobstead differs.

Each row gets a fresh database per run, so both versions create their own
schema with their own migrations. The table (medians, and after/before) goes to
stdout and ``bench/results/versions.md``.

Throughput moves with the machine's load; CPU per job much less. So the two
defer rows come with the CPU they cost per job: in the deferring process, and
in PostgreSQL (the postmaster and its children; the time a commit waits for
its disk is in neither). ``BENCH_VERSIONS_ROWS`` (comma separated: ``single``,
``bulk``, ``drain``, ``latency``, ``cpu``, ``limit``) runs only those rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .cpu import drain_cpu, server_cpu_seconds
from .harness import REPO, Harness, percentile
from .probe import open_collector
from .systems.jobstead import Jobstead

RESULT = "RESULT "

#: (key, label, higher is better)
ROWS: tuple[tuple[str, str, bool], ...] = (
    ("single", "Defer, one job per transaction (jobs/s)", True),
    ("single_cpu_client", "Defer one: deferring process CPU per job (us)", False),
    ("single_cpu_server", "Defer one: PostgreSQL CPU per job (us)", False),
    ("bulk", "Bulk defer of 20,000 (jobs/s)", True),
    ("bulk_cpu_client", "Bulk defer: deferring process CPU per job (us)", False),
    ("bulk_cpu_server", "Bulk defer: PostgreSQL CPU per job (us)", False),
    ("drain_1", "Drain 20,000 no-op jobs, 1 process (jobs/s)", True),
    ("drain_4", "Drain 20,000 no-op jobs, 4 processes (jobs/s)", True),
    ("latency_p50", "Defer-to-start p50 at 200 jobs/s (ms)", False),
    ("latency_p99", "Defer-to-start p99 at 200 jobs/s (ms)", False),
    ("limit_8", "Drain 20,000, 4 processes, global limit 8 (jobs/s)", True),
    ("cpu_worker", "Worker CPU per job, 1 process (us)", False),
    ("cpu_server", "PostgreSQL CPU per job, 1 process (us)", False),
)

#: The groups of rows ``BENCH_VERSIONS_ROWS`` chooses from, each with the rows it gives.
GROUPS: dict[str, tuple[str, ...]] = {
    "single": ("single", "single_cpu_client", "single_cpu_server"),
    "bulk": ("bulk", "bulk_cpu_client", "bulk_cpu_server"),
    "drain": ("drain_1", "drain_4"),
    "latency": ("latency_p50", "latency_p99"),
    "cpu": ("cpu_worker", "cpu_server"),
    "limit": ("limit_8",),
}


def chosen_groups() -> tuple[str, ...]:
    """``BENCH_VERSIONS_ROWS`` as group names (all when unset); an unknown name is one clear line."""
    wanted = [name.strip() for name in os.environ.get("BENCH_VERSIONS_ROWS", "").split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        raise SystemExit(f"BENCH_VERSIONS_ROWS: unknown row(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    return tuple(name for name in GROUPS if name in wanted) or tuple(GROUPS)


async def cpu_per_job(n: int, postmaster: int, run: Callable[[], Awaitable[float]]) -> tuple[float, float, float]:
    """``run()``'s result, and the CPU per job (us) it cost this process and PostgreSQL."""
    client, server = time.process_time(), server_cpu_seconds(postmaster)
    result = await run()
    client, server = time.process_time() - client, server_cpu_seconds(postmaster) - server
    return result, client / n * 1e6, server / n * 1e6


async def measure(urls: dict[str, str], postmaster: int, groups: tuple[str, ...]) -> dict[str, float]:
    """One run of the chosen rows, on the Jobstead importable here (the child's ``PYTHONPATH``)."""
    s = Settings.from_env()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    found: dict[str, float] = {}
    try:
        system = Jobstead(urls["main"])
        await system.open()
        if "single" in groups:
            found["single"], found["single_cpu_client"], found["single_cpu_server"] = await cpu_per_job(
                s.single, postmaster, lambda: harness.enqueue_single(system, s.single)
            )
        if "bulk" in groups:
            found["bulk"], found["bulk_cpu_client"], found["bulk_cpu_server"] = await cpu_per_job(
                s.jobs, postmaster, lambda: harness.enqueue_bulk(system, s.jobs)
            )
        if "drain" in groups:
            for processes in (1, s.processes):
                r = await harness.drain(system, processes=processes, jobs=s.jobs, cap=s.drain_cap, label="versions")
                found[f"drain_{processes}"] = r.rate
        if "latency" in groups:
            delays = await harness.latency(
                system, rate=s.latency_rate, seconds=s.latency_seconds, warmup=s.latency_warmup, label="versions"
            )
            found["latency_p50"] = percentile(delays, 50) * 1000
            found["latency_p99"] = percentile(delays, 99) * 1000
        if "cpu" in groups:
            await harness.reset(system)
            # CPU per job: the difference of two drains, so start-up drops out (as ``bench.cpu``).
            small, large = s.jobs, 3 * s.jobs
            _, w_small, s_small = await drain_cpu(system, small, postmaster)
            _, w_large, s_large = await drain_cpu(system, large, postmaster)
            found["cpu_worker"] = (w_large - w_small) / (large - small) * 1e6
            found["cpu_server"] = (s_large - s_small) / (large - small) * 1e6
        await system.close()
        if "limit" in groups:
            limited = Jobstead(urls["limit"], limit=s.limit)
            await limited.open()
            r = await harness.drain(limited, processes=s.processes, jobs=s.jobs, cap=s.drain_cap, label="versions")
            found["limit_8"] = r.rate
            await limited.close()
    finally:
        await harness.close()
        transport.close()
    return found


def run_one(checkout: Path, server: PostgresServer, tag: str) -> dict[str, float]:
    urls = {part: server.create_database(f"v_{tag}_{part}") for part in ("main", "limit")}
    assert server.process is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout / "runtime"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.versions", "--child", json.dumps(urls), str(server.process.pid)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT))
    return dict(json.loads(line[len(RESULT) :]))


def render(names: tuple[str, str], runs: dict[str, list[dict[str, float]]]) -> str:
    before, after = names
    lines = [
        f"| Row | before ({before}) | after ({after}) | after/before |",
        "|---|--:|--:|--:|",
    ]
    for key, label, higher in ROWS:
        if not all(key in r for r in (*runs[before], *runs[after])):
            continue  # a row BENCH_VERSIONS_ROWS left out
        b = [r[key] for r in runs[before]]
        a = [r[key] for r in runs[after]]
        mb, ma = statistics.median(b), statistics.median(a)
        ratio = ma / mb if higher else mb / ma
        digits = 0 if abs(mb) >= 100 else 1

        def fmt(v: float, digits: int = digits) -> str:
            return f"{v:,.{digits}f}"

        lines.append(
            f"| {label} | {' / '.join(fmt(v) for v in b)} (median {fmt(mb)}) "
            f"| {' / '.join(fmt(v) for v in a)} (median {fmt(ma)}) | {ratio:.2f}"
            f"{'' if higher else ' (lower is better; shown as before/after)'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="*", type=Path, help="two checkouts: before, after")
    parser.add_argument("--child", nargs=2, metavar=("URLS", "POSTMASTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        found = asyncio.run(measure(json.loads(args.child[0]), int(args.child[1]), chosen_groups()))
        print(RESULT + json.dumps(found), flush=True)
        return 0
    if len(args.checkouts) != 2 or not all((c / "runtime" / "jobstead").is_dir() for c in args.checkouts):
        parser.error("give two checkouts of this repository (each with runtime/jobstead/): before, after")
    names = (args.checkouts[0].name, args.checkouts[1].name)
    if names[0] == names[1]:
        names = (f"{names[0]} (1)", f"{names[1]} (2)")
    chosen_groups()  # a wrong BENCH_VERSIONS_ROWS stops here, before any server starts
    pairs = int(os.environ.get("BENCH_PAIRS", 2))
    server = PostgresServer(durable=True).start()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    started = time.monotonic()
    try:
        for pair in range(pairs):
            for name, checkout in zip(names, args.checkouts, strict=True):
                print(f"[{(time.monotonic() - started) / 60:4.1f} min] {name}, run {pair + 1}/{pairs}", flush=True)
                found = run_one(checkout.resolve(), server, f"{pair}_{names.index(name)}")
                print("  " + ", ".join(f"{k} {v:,.1f}" for k, v in found.items()), flush=True)
                runs[name].append(found)
    finally:
        server.cleanup()
    table = render(names, runs)
    out: dict[str, Any] = {"checkouts": [str(c) for c in args.checkouts], "runs": runs}
    (REPO / "bench" / "results" / "versions.json").write_text(json.dumps(out, indent=1))
    (REPO / "bench" / "results" / "versions.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
