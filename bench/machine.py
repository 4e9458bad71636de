"""What the figures were measured on: they mean little without it."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from .harness import libpq


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def describe(url: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) as conn:
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers"):
            row = await (await conn.execute(f"SHOW {name}")).fetchone()
            settings[name] = row[0] if row else "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": settings,
    }


def load() -> float:
    """The 1-minute load average (includes the benchmark's own processes)."""
    return os.getloadavg()[0]


TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle, since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def _our_seconds() -> float:
    """CPU seconds of this process and every live descendant (workers, PostgreSQL and its backends).

    ``cutime``/``cstime`` carry the time of children already reaped, so a worker
    or a backend that has exited still counts, through its parent.
    """
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15]) / TICK
    ours, frontier = set(), [os.getpid()]
    while frontier:
        pid = frontier.pop()
        ours.add(pid)
        frontier += [child for child, parent in parents.items() if parent == pid and child not in ours]
    return sum(times.get(pid, 0.0) for pid in ours)


class CpuMeter:
    """How busy the machine was with work that is NOT this benchmark.

    The load average cannot tell: the benchmark's own workers and PostgreSQL
    load the machine by design. This subtracts our process tree's CPU time from
    the machine's busy time; what is left is other people's work competing with
    the measurement, as a share of all cores.
    """

    def __init__(self) -> None:
        self.cores = len(os.sched_getaffinity(0))
        self._start = self._last = (time.monotonic(), _busy_seconds(), _our_seconds())
        self.peak = 0.0

    def sample(self) -> float | None:
        """Other work's share of the machine since the previous sample (0..1); None under a second.

        Windows shorter than a second are folded into the next one: the kernel's
        machine-wide and per-process clocks are sampled differently, and over a
        few milliseconds their difference is noise.
        """
        now = (time.monotonic(), _busy_seconds(), _our_seconds())
        if now[0] - self._last[0] < 1.0:
            return None
        share = self._share(self._last, now)
        self._last = now
        self.peak = max(self.peak, share)
        return share

    def overall(self) -> float:
        return self._share(self._start, (time.monotonic(), _busy_seconds(), _our_seconds()))

    def _share(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        wall = b[0] - a[0]
        if wall <= 0:
            return 0.0
        return min(max(((b[1] - a[1]) - (b[2] - a[2])) / (wall * self.cores), 0.0), 1.0)
