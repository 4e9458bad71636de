"""A worker's own metrics, one set per process (several workers in one process add up)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from ..status import AttemptOutcome, JobStatus

#: Job durations from milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Waits from a millisecond (a NOTIFY wake-up) to an hour of backlog.
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

#: Attempt outcomes as the ``outcome`` label says them.
OUTCOMES = ("succeeded", "failed", "retried", "dead", "cancelled", "timed_out", "lost")


def attempt_outcome(outcome: AttemptOutcome, status: JobStatus) -> str:
    """One attempt's label: a failure is ``retried`` (another attempt follows), ``dead`` or ``failed``."""
    if outcome is AttemptOutcome.SUCCEEDED:
        return "succeeded"
    if outcome is AttemptOutcome.CANCELLED:
        return "cancelled"
    if outcome is AttemptOutcome.TIMED_OUT:
        return "timed_out"
    if outcome is AttemptOutcome.LOST:
        return "lost"
    if status is JobStatus.RETRYING:
        return "retried"
    if status is JobStatus.DEAD:
        return "dead"
    return "failed"


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.finished = Counter(
            "jobstead_jobs_finished",
            "Job attempts finished, by how each ended (one count per attempt).",
            ["handler", "queue", "outcome"],
            registry=registry,
        )
        self.rescued = Counter(
            "jobstead_jobs_rescued",
            "Jobs this process gave back to the queue after their worker stopped renewing the lease.",
            registry=registry,
        )
        self.claims = Counter("jobstead_claims", "Claim statements run.", registry=registry)
        self.database_errors = Counter(
            "jobstead_database_errors",
            "Database calls that failed (they are retried).",
            ["operation"],
            registry=registry,
        )
        self.duration = Histogram(
            "jobstead_job_duration_seconds",
            "How long each attempt ran.",
            ["handler", "queue"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "jobstead_job_queue_wait_seconds",
            "From a job's run_at to the start of its attempt.",
            ["handler", "queue"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.claim_duration = Histogram(
            "jobstead_claim_duration_seconds", "How long each claim took.", buckets=CLAIM_BUCKETS, registry=registry
        )
        self.slots = Gauge(
            "jobstead_worker_slots",
            "Job slots of this process's workers: busy + idle = their concurrency.",
            ["state"],
            registry=registry,
        )
        self.info = Info("jobstead_worker", "This worker process.", registry=registry)
        # Read when scraped, not counted per job: an increment takes a lock, and four of
        # them per job were a fifth of a 1-process drain's event-loop time.
        self._slot_sources: dict[int, tuple[int, Callable[[], int]]] = {}
        self.slots.labels(state="busy").set_function(lambda: sum(busy() for _, busy in self._sources()))
        self.slots.labels(state="idle").set_function(lambda: sum(n - busy() for n, busy in self._sources()))

    def set_version(self, version: str) -> None:
        self.info.info({"version": version})

    def attempt(self, handler: str, queue: str, outcome: AttemptOutcome, status: JobStatus, seconds: float) -> None:
        self.finished.labels(handler=handler, queue=queue, outcome=attempt_outcome(outcome, status)).inc()
        self.duration.labels(handler=handler, queue=queue).observe(seconds)

    def add_slots(self, owner: object, concurrency: int, busy: Callable[[], int]) -> None:
        """Count ``owner``'s ``concurrency`` slots, ``busy()`` of them busy (read at each scrape)."""
        self._slot_sources[id(owner)] = (concurrency, busy)

    def remove_slots(self, owner: object) -> None:
        self._slot_sources.pop(id(owner), None)

    def _sources(self) -> tuple[tuple[int, Callable[[], int]], ...]:
        return tuple(self._slot_sources.values())  # a copy: workers come and go while a scrape reads


WORKER_METRICS = WorkerMetrics()


class JobSeries:
    """The series of one (handler, queue), with the label lookups done once."""

    def __init__(self, metrics: WorkerMetrics, handler: str, queue: str) -> None:
        self._metrics = metrics
        self._handler = handler
        self._queue = queue
        self._finished: dict[str, Any] = {}
        self.duration = metrics.duration.labels(handler=handler, queue=queue)
        self.queue_wait = metrics.queue_wait.labels(handler=handler, queue=queue)
        self.lost = self.finished_as("lost")

    def finished_as(self, outcome: str) -> Any:
        child = self._finished.get(outcome)
        if child is None:
            child = self._finished[outcome] = self._metrics.finished.labels(
                handler=self._handler, queue=self._queue, outcome=outcome
            )
        return child

    def finished(self, outcome: AttemptOutcome, status: JobStatus) -> Any:
        return self.finished_as(attempt_outcome(outcome, status))


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jobstead")
    except PackageNotFoundError:
        return "unknown"


_DEFERRED = Counter(
    "jobstead_jobs_deferred", "Jobs deferred by this process (defer, cron fires, batches).", ["handler", "queue"]
)


def deferred(jobs: Iterable[tuple[str, str]]) -> None:
    """Count deferred jobs, given as (handler, queue)."""
    counts: dict[tuple[str, str], int] = {}
    for key in jobs:
        counts[key] = counts.get(key, 0) + 1
    for (handler, queue), n in counts.items():
        _DEFERRED.labels(handler=handler, queue=queue).inc(n)
