"""A worker's own metrics, one set per process (several workers in one process add up)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class Tally:
    """A count with one writer (a worker's event loop): a plain addition, no lock; read when scraped.

    prometheus-client's ``inc()`` takes a lock per call, and the five per-job calls a worker
    made cost a 1-process drain a quarter of its throughput (issue 12's bisect, f863b02).
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Buckets:
    """A histogram series with one writer: a bisect and two additions per observation, no lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # ``le``: the first bound >= value
        self.sum += value


class _Family:
    """One metric as every writer's own series, summed by label values when scraped.

    Each worker asks for its own series (``series()``), so no two threads ever add to the
    same number; a scrape reads them from its own thread without stopping anyone (a count
    read mid-update is at most one observation behind, as with any scrape).
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], bounds: tuple[float, ...] | None):
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = bounds
        self._series: list[tuple[tuple[str, ...], Tally | Buckets]] = []
        #: What stopped writers counted, one series per label values (also in ``_series``).
        self._retired: dict[tuple[str, ...], Tally | Buckets] = {}
        self._lock = threading.Lock()  # taken when a series is made, retired or read, never per count

    def tally(self, *values: str) -> Tally:
        assert self.bounds is None
        tally = Tally()
        self._add(values, tally)
        return tally

    def buckets(self, *values: str) -> Buckets:
        assert self.bounds is not None
        buckets = Buckets(self.bounds)
        self._add(values, buckets)
        return buckets

    def _add(self, values: tuple[str, ...], series: Tally | Buckets) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        with self._lock:
            self._series.append((values, series))

    def retire(self, stopped: Iterable[Tally | Buckets]) -> None:
        """Fold the series of a writer that has stopped into one kept per label values.

        Without it a process that starts worker after worker (an application
        restarting its embedded worker, a test suite) keeps every series any of
        them made, and each scrape sums them all. The totals stay as they were:
        a counter never goes down. Series of other families are ignored.
        """
        gone = {id(series) for series in stopped}
        with self._lock:
            kept: list[tuple[tuple[str, ...], Tally | Buckets]] = []
            for values, series in self._series:
                if id(series) not in gone:
                    kept.append((values, series))
                    continue
                into = self._retired.get(values)
                if into is None:
                    into = self._retired[values] = Tally() if self.bounds is None else Buckets(self.bounds)
                    kept.append((values, into))
                if isinstance(series, Tally):
                    assert isinstance(into, Tally)
                    into.inc(series.value)
                else:
                    assert isinstance(into, Buckets)
                    into.counts = [a + b for a, b in zip(into.counts, series.counts, strict=True)]
                    into.sum += series.sum
            self._series = kept

    def metric(self) -> Metric:
        # Read under the lock (no writer takes it per count): a scrape must not see a series
        # both where it was and where ``retire`` folded it.
        with self._lock:
            return self._metric()

    def _metric(self) -> Metric:
        series = self._series
        if self.bounds is None:
            counter = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            totals: dict[tuple[str, ...], float] = {}
            for values, tally in series:
                assert isinstance(tally, Tally)
                totals[values] = totals.get(values, 0.0) + tally.value
            if not self.labelnames and not totals:
                totals[()] = 0.0  # an unlabelled counter reads 0 before its first count
            for values, total in totals.items():
                counter.add_metric(values, total)
            return counter
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        sums: dict[tuple[str, ...], tuple[list[int], float]] = {}
        for values, buckets in series:
            assert isinstance(buckets, Buckets)
            counts, total = sums.get(values) or ([0] * len(buckets.counts), 0.0)
            sums[values] = ([a + b for a, b in zip(counts, list(buckets.counts), strict=True)], total + buckets.sum)
        for values, (counts, total) in sums.items():
            cumulative, running = [], 0
            for bound, count in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            histogram.add_metric(values, cumulative, total)
        return histogram


class _Families(Collector):
    """Exposes the lock-free families to a prometheus-client registry."""

    def __init__(self, families: tuple[_Family, ...]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self._families]

    def describe(self) -> Iterable[Metric]:  # names only: registering must not read any series
        kinds = {True: CounterMetricFamily, False: HistogramMetricFamily}
        return [kinds[f.bounds is None](f.name, f.documentation, labels=f.labelnames) for f in self._families]


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        # Per job or per claim: lock-free series each worker owns (see ``Tally``).
        self.finished = _Family(
            "jobstead_jobs_finished",
            "Job attempts finished, by how each ended (one count per attempt).",
            ("handler", "queue", "outcome"),
            None,
        )
        self.duration = _Family(
            "jobstead_job_duration_seconds", "How long each attempt ran.", ("handler", "queue"), DURATION_BUCKETS
        )
        self.queue_wait = _Family(
            "jobstead_job_queue_wait_seconds",
            "From a job's run_at to the start of its attempt.",
            ("handler", "queue"),
            WAIT_BUCKETS,
        )
        self.claims = _Family("jobstead_claims", "Claim statements run.", (), None)
        self.claim_duration = _Family("jobstead_claim_duration_seconds", "How long each claim took.", (), CLAIM_BUCKETS)
        registry.register(_Families((self.finished, self.duration, self.queue_wait, self.claims, self.claim_duration)))
        # Rare events, from any thread: prometheus-client's own (locked) metrics.
        self.rescued = Counter(
            "jobstead_jobs_rescued",
            "Jobs this process gave back to the queue after their worker stopped renewing the lease.",
            registry=registry,
        )
        self.database_errors = Counter(
            "jobstead_database_errors",
            "Database calls that failed (they are retried).",
            ["operation"],
            registry=registry,
        )
        self.slots = Gauge(
            "jobstead_worker_slots",
            "Job slots of this process's workers: busy + idle = their concurrency.",
            ["state"],
            registry=registry,
        )
        self.info = Info("jobstead_worker", "This worker process.", registry=registry)
        # Read when scraped, not counted per job.
        self._slot_sources: dict[int, tuple[int, Callable[[], int]]] = {}
        self.slots.labels(state="busy").set_function(lambda: sum(busy() for _, busy in self._sources()))
        self.slots.labels(state="idle").set_function(lambda: sum(n - busy() for n, busy in self._sources()))

    def retire(self, claims: ClaimSeries | None, jobs: Iterable[JobSeries]) -> None:
        """A worker stopped: fold its own series into the totals kept for the process (``_Family.retire``)."""
        stopped: list[Tally | Buckets] = []
        if claims is not None:
            stopped += [claims.count, claims.duration]
        for series in jobs:
            stopped += series.parts()
        for family in (self.finished, self.duration, self.queue_wait, self.claims, self.claim_duration):
            family.retire(stopped)

    def set_version(self, version: str) -> None:
        self.info.info({"version": version})

    def add_slots(self, owner: object, concurrency: int, busy: Callable[[], int]) -> None:
        """Count ``owner``'s ``concurrency`` slots, ``busy()`` of them busy (read at each scrape)."""
        self._slot_sources[id(owner)] = (concurrency, busy)

    def remove_slots(self, owner: object) -> None:
        self._slot_sources.pop(id(owner), None)

    def _sources(self) -> tuple[tuple[int, Callable[[], int]], ...]:
        return tuple(self._slot_sources.values())  # a copy: workers come and go while a scrape reads


WORKER_METRICS = WorkerMetrics()


class ClaimSeries:
    """One worker's claim count and durations."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.count = metrics.claims.tally()
        self.duration = metrics.claim_duration.buckets()

    def observe(self, seconds: float) -> None:
        self.count.inc()
        self.duration.observe(seconds)


class JobSeries:
    """One worker's series of one (handler, queue): made once, then plain additions per job."""

    def __init__(self, metrics: WorkerMetrics, handler: str, queue: str) -> None:
        self._metrics = metrics
        self._handler = handler
        self._queue = queue
        self._finished: dict[str, Tally] = {}
        self._by_result: dict[tuple[AttemptOutcome, JobStatus], Tally] = {}
        self.duration = metrics.duration.buckets(handler, queue)
        self.queue_wait = metrics.queue_wait.buckets(handler, queue)
        self.lost = self.finished_as("lost")

    def parts(self) -> list[Tally | Buckets]:
        """Every series this made, for ``WorkerMetrics.retire``."""
        return [self.duration, self.queue_wait, *self._finished.values()]

    def finished_as(self, outcome: str) -> Tally:
        tally = self._finished.get(outcome)
        if tally is None:
            tally = self._finished[outcome] = self._metrics.finished.tally(self._handler, self._queue, outcome)
        return tally

    def finished(self, outcome: AttemptOutcome, status: JobStatus) -> Tally:
        """The tally of an attempt's result: one dict lookup per job once the label is known."""
        tally = self._by_result.get((outcome, status))
        if tally is None:
            tally = self._by_result[(outcome, status)] = self.finished_as(attempt_outcome(outcome, status))
        return tally


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


#: How a workflow ended, as the ``outcome`` label of ``jobstead_workflows_total`` says it.
WORKFLOW_OUTCOMES = ("succeeded", "failed", "cancelled")

_WORKFLOWS = Counter(
    "jobstead_workflows",
    "Workflows that ended, by name and outcome (succeeded, failed, cancelled), counted once, by the process "
    "whose transaction ended them.",
    ["name", "outcome"],
)


def workflows_ended(ended: Iterable[tuple[str, str]]) -> None:
    """Count workflows that just became final, given as (name, outcome), after their transaction committed.

    The store calls this where a workflow's status becomes final (the
    completion of its last step, a cancel), once per workflow: a retried
    workflow that ends again is counted again, with its new outcome.
    """
    counts: dict[tuple[str, str], int] = {}
    for key in ended:
        counts[key] = counts.get(key, 0) + 1
    for (name, outcome), n in counts.items():
        _WORKFLOWS.labels(name=name, outcome=outcome).inc(n)
