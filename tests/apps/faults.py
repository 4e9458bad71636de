"""An app whose handlers write their own start/end records, for the fault and chaos tests.

Every attempt appends lines to the file named by ``$JOBSTEAD_TEST_SPANS``
(one ``write`` each, on a file opened with O_APPEND, so lines from many
processes never interleave): ``start``, then ``end`` when the work ran to its
end, or ``stop`` when the handler saw ``ctx.cancelled`` first. Each attempt
carries a marker of its own, so two runs of one job are told apart even when
they share an attempt number (a job rescued from a frozen worker). The records
come from the handlers, not from Jobstead, so they show what really ran, and
when, whatever the database says.

The database comes from the environment (``JOBSTEAD_DATABASE_URL``,
``JOBSTEAD_SCHEMA``), like the other test apps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobstead import App, Context

SPANS_ENV = "JOBSTEAD_TEST_SPANS"

app = App()


def _write(line: str) -> None:
    fd = os.open(os.environ[SPANS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _record(kind: str, ctx: Context, marker: str) -> None:
    _write(f"{kind} {ctx.job_id} {ctx.attempt} {marker} {os.getpid()} {time.time():.6f} {ctx.handler}\n")


def _run_sync(ms: int, ctx: Context) -> str:
    marker = uuid.uuid4().hex
    _record("start", ctx, marker)
    stopped = ctx.wait_cancelled(ms / 1000)
    _record("stop" if stopped or ctx.cancelled else "end", ctx, marker)
    return marker


@app.handler(max_attempts=50, retry=0)
def work(ms: int, ctx: Context) -> str:
    """Sleeps ``ms`` milliseconds (a unit of work that stops when cancelled)."""
    return _run_sync(ms, ctx)


@app.handler(max_attempts=50, retry=0)
async def work_async(ms: int, ctx: Context) -> str:
    """The async twin: cancelled for real, so ``stop`` is written from the CancelledError."""
    marker = uuid.uuid4().hex
    _record("start", ctx, marker)
    try:
        await asyncio.sleep(ms / 1000)
    except asyncio.CancelledError:
        _record("stop", ctx, marker)
        raise
    _record("stop" if ctx.cancelled else "end", ctx, marker)
    return marker


@app.handler(concurrency=3, max_attempts=50, retry=0)
def limited(ms: int, ctx: Context) -> str:
    """Global limit 3: the records show the peak across every process."""
    return _run_sync(ms, ctx)


@app.handler(max_attempts=50, retry=0)
def steps(count: int, ms: int, ctx: Context, until: str | None = None) -> str:
    """Checkpoints after each step, so a frozen worker's late checkpoint would show.

    ``until``: a file whose appearance ends the work at the next step, so a test
    that waits on something else need not size ``count`` for the slowest machine.
    """
    marker = uuid.uuid4().hex
    _record("start", ctx, marker)
    start = int((ctx.checkpoint_data or {}).get("next", 0))
    for step in range(start, count):
        if ctx.wait_cancelled(ms / 1000):
            _record("stop", ctx, marker)
            return marker
        ctx.checkpoint({"next": step + 1, "pid": os.getpid(), "marker": marker})
        if until is not None and Path(until).exists():
            break
    _record("end", ctx, marker)
    return marker


@app.cron("* * * * * *", name="tick")
def tick(ctx: Context) -> str:
    """Every second: the fire time it was deferred for, checked for duplicates and earliness."""
    fire_at = str(ctx.metadata.get("cron_fire_at")).replace(" ", "T")
    _write(f"cron {ctx.job_id} {fire_at} {os.getpid()} {time.time():.6f}\n")
    return fire_at


@dataclass(frozen=True)
class Span:
    """One attempt of one job as its handler recorded it; ``end`` is None when it never finished."""

    job_id: int
    attempt: int
    marker: str
    pid: int
    start: float
    end: float | None
    how: str  # "end", "stop", or "" (no end record: killed)
    handler: str = ""


def _written_lines(path: Path) -> list[str]:
    """The file's lines that were written whole: a line being appended as we read may show
    only its first part (a write that crosses a page is copied a page at a time), and is
    left for the next read."""
    if not path.exists():
        return []
    return path.read_text().split("\n")[:-1]


def read_spans(path: Path) -> list[Span]:
    starts: dict[str, tuple[int, int, int, float, str]] = {}
    ends: dict[str, tuple[float, str]] = {}
    for line in _written_lines(path):
        parts = line.split()
        if not parts or parts[0] == "cron":
            continue
        kind, job_id, attempt, marker, pid, at, handler = parts
        if kind == "start":
            starts[marker] = (int(job_id), int(attempt), int(pid), float(at), handler)
        else:
            ends[marker] = (float(at), kind)
    spans = []
    for key, (number, try_number, process, start, name) in starts.items():
        end, how = ends.get(key, (None, ""))
        spans.append(Span(number, try_number, key, process, start, end, how, name))
    return spans


def read_cron_fires(path: Path) -> list[tuple[int, str, float]]:
    """``(job id, fire time, run at)`` for every run of the ``tick`` cron."""
    fires = []
    for line in _written_lines(path):
        parts = line.split()
        if parts and parts[0] == "cron":
            fires.append((int(parts[1]), parts[2], float(parts[4])))
    return fires


def overlapping(spans: list[Span], *, until: float) -> list[tuple[Span, Span]]:
    """Pairs of attempts of one job that ran at the same time; an unfinished one runs ``until``."""
    by_job: dict[int, list[Span]] = {}
    for span in spans:
        by_job.setdefault(span.job_id, []).append(span)
    pairs = []
    for runs in by_job.values():
        runs.sort(key=lambda s: s.start)
        for earlier, later in itertools.pairwise(runs):
            if later.start < (earlier.end if earlier.end is not None else until):
                pairs.append((earlier, later))
    return pairs
