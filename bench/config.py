"""Sizes and repetitions: the issue's figures by default, smaller ones for a smoke run.

``BENCH_QUICK=1`` shrinks everything so a change to the harness itself can be
checked in about a minute; its figures are not comparable and the report says so.
Single knobs can be overridden too (``BENCH_REPS``, ``BENCH_JOBS``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


#: Every system ``make bench`` compares, in the table's column order.
ALL_SYSTEMS = ("jobstead", "pgqueuer", "procrastinate", "oban", "chancy")


def _systems() -> tuple[str, ...]:
    wanted = [name.strip() for name in os.environ.get("BENCH_SYSTEMS", "").split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ALL_SYSTEMS))
    if unknown:
        raise SystemExit(f"BENCH_SYSTEMS: unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    return tuple(name for name in ALL_SYSTEMS if name in wanted) or ALL_SYSTEMS


@dataclass(frozen=True)
class Settings:
    quick: bool
    #: Every figure is the median of this many runs (the issue asks for at least 3).
    reps: int
    #: Jobs per drain and per bulk defer.
    jobs: int
    #: A drain stops counting after this many seconds from its first job; a slower
    #: system is measured on the jobs it finished by then (keeps the run under 15 min).
    drain_cap: float
    #: Single defers per run, each in its own transaction.
    single: int
    #: Latency: probe jobs per second, for this many seconds, after a discarded warm-up.
    latency_rate: float
    latency_seconds: float
    latency_warmup: float
    #: Finished jobs already in the table for the claim-cost comparison.
    history_small: int
    history_large: int
    #: Global concurrency limit for the limited-throughput figure.
    limit: int
    #: Worker processes for the multi-process figures.
    processes: int
    #: pgbench seconds per run.
    pgbench_seconds: int
    #: Steady-state workload: seconds of warm-up, then seconds measured, per load.
    steady_warmup: float = 2.0
    steady_seconds: float = 8.0
    #: Systems to measure (``BENCH_SYSTEMS=jobstead,pgqueuer``); a run of fewer than all is
    #: written to ``bench/results/partial.md`` and never replaces the published table.
    systems: tuple[str, ...] = ALL_SYSTEMS
    #: ``BENCH_SCALE=1``: also the long scale rows (``bench.scale``: the deep queue and the long
    #: history), which add about 13 minutes; the spread drain (many handlers) always runs.
    scale: bool = False
    #: Runs per deep-queue drain (each refills the queue: about a minute per system and run).
    scale_reps: int = 3
    #: Ready jobs in the deep queue.
    deep_jobs: int = 1_000_000
    #: The spread drain: jobs spread evenly over this many handlers in this many queues.
    spread_jobs: int = 100_000
    spread_handlers: int = 1_000
    spread_queues: int = 100
    #: Finished jobs in the table for the long-history drain (beside ``history_small``).
    history_huge: int = 10_000_000
    #: The MariaDB column (``bench.mariadb``): Jobstead's figures on MariaDB beside PostgreSQL's
    #: (``BENCH_MARIADB=0`` leaves it out).
    mariadb: bool = True

    @property
    def partial(self) -> bool:
        return set(self.systems) != set(ALL_SYSTEMS)

    @classmethod
    def from_env(cls) -> Settings:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        return cls(
            quick=quick,
            reps=_int("BENCH_REPS", 1 if quick else 3),
            jobs=_int("BENCH_JOBS", 2_000 if quick else 20_000),
            drain_cap=_float("BENCH_DRAIN_CAP", 5 if quick else 8),
            single=_int("BENCH_SINGLE", 200 if quick else 1_000),
            latency_rate=_float("BENCH_LATENCY_RATE", 200),
            latency_seconds=_float("BENCH_LATENCY_SECONDS", 3 if quick else 10),
            latency_warmup=_float("BENCH_LATENCY_WARMUP", 1),
            history_small=_int("BENCH_HISTORY_SMALL", 10_000),
            history_large=_int("BENCH_HISTORY_LARGE", 50_000 if quick else 1_000_000),
            limit=_int("BENCH_LIMIT", 8),
            processes=_int("BENCH_PROCESSES", 4),
            pgbench_seconds=_int("BENCH_PGBENCH_SECONDS", 2 if quick else 5),
            systems=_systems(),
            steady_warmup=_float("BENCH_STEADY_WARMUP", 1 if quick else 2),
            steady_seconds=_float("BENCH_STEADY_SECONDS", 3 if quick else 8),
            scale=os.environ.get("BENCH_SCALE", "") not in ("", "0"),
            scale_reps=_int("BENCH_SCALE_REPS", _int("BENCH_REPS", 1 if quick else 3)),
            deep_jobs=_int("BENCH_DEEP_JOBS", 50_000 if quick else 1_000_000),
            spread_jobs=_int("BENCH_SPREAD_JOBS", 10_000 if quick else 100_000),
            spread_handlers=_int("BENCH_SPREAD_HANDLERS", 1_000),
            spread_queues=_int("BENCH_SPREAD_QUEUES", 100),
            history_huge=_int("BENCH_HISTORY_HUGE", 200_000 if quick else 10_000_000),
            mariadb=os.environ.get("BENCH_MARIADB", "1") not in ("", "0") and "jobstead" in _systems(),
        )
