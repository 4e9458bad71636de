"""The garbage collector's young generation, sized for a process that runs jobs.

Every job a worker runs allocates a few objects that live until its
completion is written: the claimed job, its task and coroutine, its
completion. CPython's default first threshold (700 net allocations) runs a
young collection every few dozen jobs, and each one finds the jobs in flight
(thousands at a high concurrency) still alive, traverses them again and
promotes them, until the old generation has grown by a quarter and a full
collection walks the whole heap. Measured on a 1-process drain of 60,000
no-op jobs: the collector took 1.2 s of the worker's 5.7 s of CPU (seven full
collections); with the first threshold at 10,000 it took 0.2 s, no full
collection ran, and the worker's CPU per job fell from 66-70 to 48-53 us.

Only the blocking entry points (``Worker.run``, ``jobstead worker`` and
``jobstead run``) do this, for as long as they run, and put the thresholds
back after: they own the process. A worker embedded in an application's own
event loop (``run_async``) leaves the application's collector alone.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Net allocations between young collections while a worker owns the process.
YOUNG_THRESHOLD = 10_000


_lock = threading.Lock()
_holders = 0
_saved: tuple[int, ...] = ()


@contextmanager
def sized_for_jobs() -> Iterator[None]:
    """Raise the first collection threshold (never lower it) while the block runs.

    Counted: several workers blocking in threads of one process share one
    raise, and the thresholds found before the first go back after the last.
    """
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            if _saved[0] and _saved[0] < YOUNG_THRESHOLD:  # 0: the collector is off; leave it so
                gc.set_threshold(YOUNG_THRESHOLD, *_saved[1:])
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.set_threshold(*_saved)
