"""OpenTelemetry traces: the ``defer`` span is the parent of each ``run <handler>`` span, across a real worker too.

Spans are recorded by the OpenTelemetry SDK itself: its in-memory exporter in
this process (through ``jobstead.tracing.configure``, so no global provider
outlives the test), and in a worker process its console exporter writing JSON
lines to a file (``tests/apps/traced.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobstead import App, Context, JobStatus, tracing
from tests.conftest import Target
from tests.support.processes import REPO, spawn_cli, stop


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.configure(None)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_the_defer_span_is_the_parent_of_each_attempts_run_span(
    app: App, running_worker: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    seen: list[str | None] = []

    @app.handler(max_attempts=2, retry=0)
    def charge(amount: int, ctx: Context) -> int:
        seen.append((ctx.metadata or {}).get("traceparent"))
        if ctx.attempt == 1:
            raise ConnectionError("card network busy")
        return amount

    request = tracing._tracer().start_as_current_span("POST /checkout")
    with request as parent:
        job = charge.configure(metadata={"order": 7}).defer(amount=42)
    with running_worker(app):
        assert job.wait(10) == 42

    (defer,) = named(spans, "defer")
    runs = sorted(named(spans, "run charge"), key=lambda s: s.start_time or 0)
    assert len(runs) == 2, "one run span per attempt"
    assert defer.kind is SpanKind.PRODUCER and defer.parent is not None
    assert defer.parent.span_id == parent.get_span_context().span_id, "defer is a child of the request"
    assert defer.attributes is not None and defer.attributes["jobstead.job_id"] == job.id
    for run in runs:
        assert run.kind is SpanKind.CONSUMER
        assert run.context is not None and defer.context is not None
        assert run.context.trace_id == defer.context.trace_id, "one trace from the request to the run"
        assert run.parent is not None and run.parent.span_id == defer.context.span_id
    assert runs[0].status.status_code is StatusCode.ERROR and runs[0].events[0].name == "exception"
    assert runs[1].status.status_code is StatusCode.UNSET
    assert runs[1].attributes is not None and runs[1].attributes["jobstead.attempt"] == 2
    record = job.refresh().record
    assert record.metadata is not None and record.metadata["order"] == 7, "the caller's metadata is kept"
    assert seen == [record.metadata["traceparent"]] * 2
    assert record.metadata["traceparent"].split("-")[1] == format(defer.context.trace_id, "032x")


def test_a_job_deferred_inside_a_run_continues_the_trace_and_an_own_traceparent_is_kept(
    app: App, running_worker: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    @app.handler
    def child() -> None:
        return None

    @app.handler
    def parent() -> int:
        return child.defer().id

    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with running_worker(app):
        child_id = parent.defer().wait(10)
        deadline = time.monotonic() + 10
        while app.get_job(child_id).status is not JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        kept = child.configure(metadata={"traceparent": own}).defer()
        kept.wait(10)
    (run_parent,) = named(spans, "run parent")
    runs_child = named(spans, "run child")
    first_child = next(s for s in runs_child if s.attributes and s.attributes["jobstead.job_id"] == child_id)
    inner_defer = next(s for s in named(spans, "defer") if s.parent and s.parent.span_id == run_parent.context.span_id)  # type: ignore[union-attr]
    assert first_child.parent is not None and first_child.parent.span_id == inner_defer.context.span_id  # type: ignore[union-attr]
    assert first_child.context.trace_id == run_parent.context.trace_id  # type: ignore[union-attr]
    assert kept.refresh().record.metadata == {"traceparent": own}
    own_run = next(s for s in runs_child if s.attributes and s.attributes["jobstead.job_id"] == kept.id)
    assert format(own_run.context.trace_id, "032x") == own.split("-")[1]  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_real_worker_process_runs_the_job_in_the_deferring_trace(
    target: Target, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    from tests.apps import traced

    app = App(target.url, schema=target.schema)
    for name in ("traced_work", "traced_flaky"):
        h = traced.app.get_handler(name)
        app.handler(name=name, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    with tracing._tracer().start_as_current_span("request"):
        work = app.get_handler("traced_work").defer(n=1)
        flaky = app.get_handler("traced_flaky").defer(n=2)
    out = tmp_path / "spans.jsonl"
    env = {**target.env(), "JOBSTEAD_TEST_SPANS": str(out)}
    worker = spawn_cli(["worker", "--app", "tests.apps.traced:app", "--poll-interval", "0.1"], env, tmp_path / "w.log")
    try:
        assert work.wait(30) == 1 and flaky.wait(30) == 2
    finally:
        assert stop(worker) == 0
    app.close()
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    defers = {s.attributes["jobstead.job_id"]: s for s in named(spans, "defer")}  # type: ignore[index]
    for job, name, attempts in ((work, "run traced_work", 1), (flaky, "run traced_flaky", 2)):
        runs = [s for s in exported if s["name"] == name]
        assert len(runs) == attempts
        defer_context = defers[job.id].context
        assert defer_context is not None
        for run in runs:
            assert run["kind"] == "SpanKind.CONSUMER"
            assert run["context"]["trace_id"] == f"0x{defer_context.trace_id:032x}"
            assert run["parent_id"] == f"0x{defer_context.span_id:016x}"
    (inner,) = [s for s in exported if s["name"] == "inside the handler"]
    (run_work,) = [s for s in exported if s["name"] == "run traced_work"]
    assert inner["parent_id"] == run_work["context"]["span_id"], "the handler's own spans nest in its run span"


def test_without_opentelemetry_nothing_is_imported_and_jobs_run(tmp_path: Path) -> None:
    """With the package hidden, ``tracing.ENABLED`` is False and defer and run work as before, without metadata."""
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if not installed
from jobstead import App, tracing
assert tracing.ENABLED is False
app = App("sqlite:///{tmp_path / "jobs.db"}")
@app.handler
def add(a: int, b: int) -> int:
    return a + b
app.migrate()
job = add.defer(a=1, b=2)
worker = app.worker(poll_interval=0.05, install_signal_handlers=False)
import threading
t = threading.Thread(target=worker.run, daemon=True)
t.start()
assert job.wait(10) == 3
worker.stop()
t.join(10)
assert job.refresh().record.metadata is None
assert not [m for m, module in sys.modules.items() if m.startswith("opentelemetry") and module is not None]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_api_alone_writes_nothing_unless_a_trace_is_in_progress(app: App) -> None:
    """No SDK: no span and no metadata; a context in progress (propagation only) still travels with the job."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    @app.handler
    def quiet() -> None:
        return None

    assert not tracing.active()
    assert quiet.defer().record.metadata is None
    incoming = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True,
        trace_flags=TraceFlags(1),
    )  # fmt: skip
    with trace.use_span(NonRecordingSpan(incoming)):
        assert tracing.active()
        job = quiet.defer()
    metadata = job.refresh().record.metadata
    assert metadata is not None and metadata["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
