"""OpenTelemetry traces from defer to run, when ``opentelemetry-api`` is installed (``jobstead[otel]``).

A ``defer`` span (kind PRODUCER) covers every insert of jobs (``defer``,
``defer_many``, batches, ``jobstead defer``); its context travels in each
job's metadata as W3C trace context (``traceparent``, and ``tracestate``
when there is one), so it survives the database and any number of retries.
The worker runs each attempt inside a ``run <handler>`` span (kind CONSUMER)
whose parent is that context: one trace shows the request that deferred the
job and every run of it, and a job deferred from inside a run is a child of
that run.

Without the package nothing here is imported beyond this module, ``ENABLED``
is False, and the enqueue and worker paths skip their hooks with one test of
a constant. With the API but no SDK configured and no trace in progress
(``active()`` False), no span is started and no metadata is written; a trace
context in progress without an SDK (propagation only) still travels. Metadata the caller set themselves
(a ``traceparent`` of their own) is left as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # the extra is not installed: tracing is off, at no cost
    ENABLED = False
else:
    ENABLED = True
    #: What ``get_tracer_provider`` returns while no SDK is installed: its spans record nothing.
    _NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)

if TYPE_CHECKING:
    from .store.records import ClaimedJob, JobRecord, NewJob
    from .worker.execution import Finished

#: The metadata keys the trace context travels under (W3C Trace Context's own header names).
TRACE_KEYS = ("traceparent", "tracestate")
SYSTEM = "jobstead"


_tracer_provider: Any = None
_cached: Any = None


def configure(tracer_provider: Any = None) -> None:
    """Trace with this ``TracerProvider`` instead of OpenTelemetry's global one (``None``: the global again).

    As OpenTelemetry's instrumentations take a ``tracer_provider``: for an app
    that keeps several, and for tests that must not install a global one.
    """
    global _tracer_provider, _cached
    _tracer_provider = tracer_provider
    _cached = None


def _tracer() -> Any:
    global _cached
    if _cached is None:
        # The global's tracer is a proxy until a provider is installed, then that provider's: safe to keep.
        provider = _tracer_provider if _tracer_provider is not None else trace.get_tracer_provider()
        _cached = provider.get_tracer("jobstead")
    return _cached


def active() -> bool:
    """Whether a span would matter: an SDK records them, or a trace is in progress whose context must travel.

    False for the API alone with nothing to propagate (a dependency pulled the
    package in): the hooks then cost a provider check and a context lookup,
    not a span.
    """
    if _tracer_provider is not None or not isinstance(trace.get_tracer_provider(), _NO_SDK):
        return True
    return bool(trace.get_current_span().get_span_context().is_valid)


@contextmanager
def deferring(jobs: Sequence[NewJob]) -> Iterator[tuple[Sequence[NewJob], list[JobRecord]]]:
    """A ``defer`` span around an insert: yields the jobs with the span's context in their metadata.

    The caller appends the inserted records to the yielded list so that their
    ids end up on the span.
    """
    handlers = sorted({j.handler for j in jobs})
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.batch.message_count": len(jobs),
        "jobstead.handler": handlers[0] if len(handlers) == 1 else ",".join(handlers),
    }
    queues = {j.queue for j in jobs}
    if len(queues) == 1:
        attributes["messaging.destination.name"] = next(iter(queues))
    records: list[JobRecord] = []
    with _tracer().start_as_current_span("defer", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traced = [_with_context(j, carrier) for j in jobs] if carrier else list(jobs)
        yield traced, records
        if len(records) == 1:
            span.set_attribute("jobstead.job_id", records[0].id)


def _with_context(job: NewJob, carrier: dict[str, str]) -> NewJob:
    metadata = dict(job.metadata or {})
    if "traceparent" in metadata:
        return job  # the caller's own context wins
    metadata.update({k: v for k, v in carrier.items() if k in TRACE_KEYS})
    return dataclasses.replace(job, metadata=metadata)


async def running(job: ClaimedJob, call: Awaitable[Finished]) -> Finished:
    """Await one attempt inside a ``run <handler>`` span, child of the job's ``defer`` span if it had one."""
    metadata = job.metadata or {}
    carrier = {k: str(metadata[k]) for k in TRACE_KEYS if isinstance(metadata.get(k), str)}
    if not carrier and not active():
        return await call
    parent = propagate.extract(carrier) if carrier else None
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": job.queue,
        "jobstead.job_id": job.id,
        "jobstead.handler": job.handler,
        "jobstead.attempt": job.attempts,
    }
    with _tracer().start_as_current_span(
        f"run {job.handler}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        finished = await call
        if finished.exception is not None:
            span.record_exception(finished.exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(finished.exception).__name__}: {finished.exception}"))
        elif finished.timed_out:
            span.set_status(Status(StatusCode.ERROR, "timed out"))
        elif finished.cancelled:
            span.set_attribute("jobstead.cancelled", True)
        return finished
