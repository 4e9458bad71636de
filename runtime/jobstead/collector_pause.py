"""The garbage collector, paused while one bulk defer builds and inserts its jobs.

A ``defer_many`` of 20,000 jobs allocates a few tracked objects per job (the
job to insert, its record, its handle: about 100,000 in all), and all of them
live until the call returns. CPython's collector counts them as they come:
every 700 it traverses the young ones, every tenth of those the middle
generation, and once the survivors have grown the old generation by a
quarter it walks the whole heap, the application's objects included. None of
this finds anything, since those objects form no cycles (reference counting
frees them), but one or two full collections fall inside such a call, and
which of the two depends on what the process did before: measured on
PostgreSQL, the collector was 3 to 5 us of the deferring process's 10 to 13 us
of CPU per job, and the difference of one full collection was most of a 0.76x
bulk defer figure between two versions that spent the same CPU without it.

Only calls of at least ``PAUSE_MIN_JOBS`` pause: below that, a call costs the
collector a few young collections, not worth touching process-wide state.
The pause is the call's alone: whoever turned the collector off turns it back
on, so overlapping calls (threads, tasks) never leave it off, and a collector
the application turned off before stays off. What other threads leave in
cycles meanwhile is collected once the call ends; a call that keeps its
handles pays the young collection of them then, as it would have during the
call. A pause never spans an ``await``: a coroutine dropped there in a
reference cycle would be closed only by the collector it keeps off, so
``defer_many_async`` pauses for each stretch that runs to its end (building
the jobs, the insert in its thread, making the handles).
"""

from __future__ import annotations

import gc
from types import TracebackType

#: Jobs in one call from which the collector is paused for it.
PAUSE_MIN_JOBS = 1_000


class collector_paused:  # lower case like contextlib.suppress: read as ``with collector_paused(n):``
    """Pause the collector for the block when ``jobs`` is at least ``PAUSE_MIN_JOBS`` and it is on.

    A class rather than a generator: leaving a generator's block raises
    StopIteration, an allocation, which would run the young collection the
    pause put off at once, over the handles the call is about to return;
    this way it runs at the caller's next allocation, often after they are gone.
    """

    __slots__ = ("_paused",)

    def __init__(self, jobs: int) -> None:
        self._paused = jobs >= PAUSE_MIN_JOBS and gc.isenabled()

    def __enter__(self) -> None:
        if self._paused:
            gc.disable()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._paused:
            gc.enable()
