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
from pathlib import Path
from typing import Any

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .cpu import drain_cpu
from .harness import REPO, Harness, percentile
from .probe import open_collector
from .systems.jobstead import Jobstead

RESULT = "RESULT "

#: (key, label, higher is better)
ROWS: tuple[tuple[str, str, bool], ...] = (
    ("single", "Defer, one job per transaction (jobs/s)", True),
    ("bulk", "Bulk defer of 20,000 (jobs/s)", True),
    ("drain_1", "Drain 20,000 no-op jobs, 1 process (jobs/s)", True),
    ("drain_4", "Drain 20,000 no-op jobs, 4 processes (jobs/s)", True),
    ("latency_p50", "Defer-to-start p50 at 200 jobs/s (ms)", False),
    ("latency_p99", "Defer-to-start p99 at 200 jobs/s (ms)", False),
    ("limit_8", "Drain 20,000, 4 processes, global limit 8 (jobs/s)", True),
    ("cpu_worker", "Worker CPU per job, 1 process (us)", False),
    ("cpu_server", "PostgreSQL CPU per job, 1 process (us)", False),
)


async def measure(urls: dict[str, str], postmaster: int) -> dict[str, float]:
    """One run of every row, on the Jobstead importable here (the child's ``PYTHONPATH``)."""
    s = Settings.from_env()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    found: dict[str, float] = {}
    try:
        system = Jobstead(urls["main"])
        await system.open()
        found["single"] = await harness.enqueue_single(system, s.single)
        found["bulk"] = await harness.enqueue_bulk(system, s.jobs)
        for processes in (1, s.processes):
            r = await harness.drain(system, processes=processes, jobs=s.jobs, cap=s.drain_cap, label="versions")
            found[f"drain_{processes}"] = r.rate
        delays = await harness.latency(
            system, rate=s.latency_rate, seconds=s.latency_seconds, warmup=s.latency_warmup, label="versions"
        )
        found["latency_p50"] = percentile(delays, 50) * 1000
        found["latency_p99"] = percentile(delays, 99) * 1000
        await harness.reset(system)
        # CPU per job: the difference of two drains, so start-up drops out (as ``bench.cpu``).
        small, large = s.jobs, 3 * s.jobs
        _, w_small, s_small = await drain_cpu(system, small, postmaster)
        _, w_large, s_large = await drain_cpu(system, large, postmaster)
        found["cpu_worker"] = (w_large - w_small) / (large - small) * 1e6
        found["cpu_server"] = (s_large - s_small) / (large - small) * 1e6
        await system.close()
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
        found = asyncio.run(measure(json.loads(args.child[0]), int(args.child[1])))
        print(RESULT + json.dumps(found), flush=True)
        return 0
    if len(args.checkouts) != 2 or not all((c / "runtime" / "jobstead").is_dir() for c in args.checkouts):
        parser.error("give two checkouts of this repository (each with runtime/jobstead/): before, after")
    names = (args.checkouts[0].name, args.checkouts[1].name)
    if names[0] == names[1]:
        names = (f"{names[0]} (1)", f"{names[1]} (2)")
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
