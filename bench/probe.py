"""Worker processes report to the harness over UDP on the loopback.

Why UDP: the three systems run their handlers in different processes, loops and
threads; a datagram is the cheapest signal every one of them can send without
sharing anything with the harness, and it never blocks a handler. Every message
carries the sender's own ``time.time()`` stamps, so when the harness reads it
does not matter: a busy harness delays reading, never the figures.

Messages (ASCII, space-separated):

* ``ready PID``: the worker's run loop is up (it has made its first claim or
  reached its idle wait), so a drain timed from now excludes start-up;
* ``first PID T``: the first job of this process started at ``T``;
* ``lat T_DEFER T_START``: a latency probe job deferred at ``T_DEFER`` started at ``T_START``;
* ``prog PID T COUNT``: this process has started ``COUNT`` jobs, the last of them at ``T``
  (``bench.scale``'s deep drains only: sent at every ``$BENCH_PROGRESS``-th job and once
  more when the process exits, so the harness can tell the rate in any stretch of a
  drain without counting rows in the database while it runs);
* ``done PID T COUNT``: this process has durably recorded ``COUNT`` finished jobs, the last
  batch committed at ``T`` (``bench.scale`` only: ``bench.worker`` wraps the system's own
  completion write when ``$BENCH_PROGRESS`` is set; one datagram per written batch);
* ``busy PID T BUSY ELAPSED D1,D2,...``: the steady-state workload's summary of the
  last quarter second up to ``T`` (``SlotMeter``): ``BUSY`` slot-seconds in use
  over ``ELAPSED`` seconds, and the defer-to-start delays (ms) of the jobs that
  started in it. One datagram per process every 250 ms instead of one per job,
  so reporting costs the workers nothing measurable at 10,000 jobs/s.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ENV = "BENCH_PROBE"
#: Jobs per ``prog`` report (unset or 0: none are sent).
PROGRESS_ENV = "BENCH_PROGRESS"


class Reporter:
    """The worker's side: cheap, fire-and-forget datagrams to the address in ``$BENCH_PROBE``."""

    def __init__(self, address: str | None = None) -> None:
        host, _, port = (address or os.environ[ENV]).rpartition(":")
        self._target = (host, int(port))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._first_sent = False
        self.pid = os.getpid()
        self._every = int(os.environ.get(PROGRESS_ENV) or 0)
        self._count = 0
        self._last = 0.0
        self._done = 0
        if self._every:
            # the exact count and the time of the last start, once the worker loop has stopped
            atexit.register(self._final)

    def send(self, message: str) -> None:
        with contextlib.suppress(OSError):  # the harness went away: nothing to report to
            self._sock.sendto(message.encode(), self._target)

    def ready(self) -> None:
        self.send(f"ready {self.pid}")

    def job_started(self, t_defer: float) -> None:
        """Called at the top of every no-op handler: one branch when nothing is to be sent."""
        now = time.time()
        if not self._first_sent:
            self._first_sent = True
            self.send(f"first {self.pid} {now!r}")
        if t_defer:
            self.send(f"lat {t_defer!r} {now!r}")
        if self._every:
            self._count += 1
            self._last = now
            if self._count % self._every == 0:
                self.send(f"prog {self.pid} {now!r} {self._count}")

    def jobs_done(self, n: int) -> None:
        """``n`` more finished jobs are durably recorded (called after the system's write returned)."""
        self._done += n
        self.send(f"done {self.pid} {time.time()!r} {self._done}")

    def _final(self) -> None:
        if self._count:
            self.send(f"prog {self.pid} {self._last!r} {self._count}")


class SlotMeter:
    """In a worker process: slots in use (time-weighted) and start delays, sent every 250 ms.

    Runs on the worker's event loop (the handlers are async), so no locking.
    """

    #: Delays per datagram: well under the 64 KiB a datagram may carry.
    CHUNK = 2000

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._in_use = 0
        self._changed = time.monotonic()
        self._busy = 0.0
        self._delays: list[str] = []
        self._since = self._changed
        self._flusher: asyncio.Task[None] | None = None

    def _account(self) -> None:
        now = time.monotonic()
        self._busy += self._in_use * (now - self._changed)
        self._changed = now

    def started(self, t_defer: float) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every(0.25))
        self._account()
        self._in_use += 1
        self._delays.append(f"{(time.time() - t_defer) * 1000:.2f}")

    def finished(self) -> None:
        self._account()
        self._in_use -= 1

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._account()
            now = time.monotonic()
            busy, elapsed, delays = self._busy, now - self._since, self._delays
            self._busy, self._since, self._delays = 0.0, now, []
            stamp = time.time()
            chunks = [delays[i : i + self.CHUNK] for i in range(0, len(delays), self.CHUNK)] or [[]]
            for i, chunk in enumerate(chunks):
                # busy time travels with the first chunk only
                b, e = (busy, elapsed) if i == 0 else (0.0, 0.0)
                self._reporter.send(f"busy {self._reporter.pid} {stamp!r} {b!r} {e!r} {','.join(chunk)}")


@dataclass
class SteadySample:
    """One ``busy`` datagram as the harness received it."""

    pid: int
    at: float
    busy: float
    elapsed: float
    delays_ms: list[float]


@dataclass
class Collector(asyncio.DatagramProtocol):
    """The harness's side: collects messages; ``reset`` between measurements."""

    ready: set[int] = field(default_factory=set)
    first: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    steady: list[SteadySample] = field(default_factory=list)
    #: ``prog`` reports: (time, pid, jobs that process had started by then).
    progress: list[tuple[float, int, int]] = field(default_factory=list)
    #: ``done`` reports: (time, pid, finished jobs that process had recorded by then).
    done: list[tuple[float, int, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        kind, _, rest = data.decode().partition(" ")
        if kind == "ready":
            self.ready.add(int(rest))
        elif kind == "first":
            pid, t = rest.split()
            self.first.setdefault(int(pid), float(t))
        elif kind == "lat":
            t_defer, t_start = (float(x) for x in rest.split())
            self.latencies.append(t_start - t_defer)
        elif kind == "busy":
            pid, at, busy, elapsed, *delays = rest.split(" ")
            values = [float(d) for d in delays[0].split(",") if d] if delays else []
            self.steady.append(SteadySample(int(pid), float(at), float(busy), float(elapsed), values))
            return  # nothing waits on these: no wake-up per datagram
        elif kind == "prog":
            pid, t, count = rest.split()
            self.progress.append((float(t), int(pid), int(count)))
            return  # polled by the harness, not waited on
        elif kind == "done":
            pid, t, count = rest.split()
            self.done.append((float(t), int(pid), int(count)))
            return
        self.changed.set()

    def reset(self) -> None:
        self.ready.clear()
        self.first.clear()
        self.latencies.clear()
        self.steady.clear()
        self.progress.clear()
        self.done.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every message) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return bool(predicate())
        return True


async def open_collector() -> tuple[Collector, str, asyncio.DatagramTransport]:
    """Listen on a free loopback UDP port; return the collector and the address workers send to."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    host, port = sock.getsockname()[:2]
    return protocol, f"{host}:{port}", transport
