"""The cron scheduler: turns due fire times into ordinary jobs, through the store.

Any number may run (one per ``jobstead scheduler`` or ``jobstead run``
process, several replicas each): no leader, no lock. Each fire is decided by
the database (``store.crons.fire``: a compare-and-set on the cron's
``handled_until`` plus a unique key on cron and fire time), so however many
schedulers see a fire time come due, one job is deferred for it.

One pass (``tick``) looks at every enabled cron of this app's handlers:

* nothing due (the latest fire time is already handled): nothing to do;
* due: only the LATEST due fire time counts. Earlier ones that were missed
  (every scheduler down, or the process paused) are logged and dropped, so a
  recovery never sends a burst of catch-up jobs. That one fire runs if it is
  within the cron's ``starting_deadline`` (always, when it has none), else it
  is skipped and logged.

A scheduler ignores crons whose handler its app does not have (another app's
scheduler runs those), and code crons its app does not define (a cron deleted
from the code stops, though its row stays until someone removes it). It never
deletes a cron.

Whose crons those are is the scheduler's scope: an app's (``AppCrons``, made
by ``App.scheduler``) or a whole database's (``DatabaseCrons``, the
operator's). The scheduler itself does not know which it serves.

``tick`` is driven by tests with a fake clock; ``run``/``run_async`` loop it,
waking at the next fire time or every ``interval`` seconds (to see new and
changed crons), whichever is sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..clock import Clock, as_utc
from ..errors import ConfigurationError, JobNotFound
from ..lifecycle import Backoff, LoopSignals, Sleeper, log_failure, log_recovery, until_ready
from ..store import CronRecord, Store
from ..store.crons import FireOutcome, SkipReason
from .schedule import CronSchedule, InvalidSchedule

logger = logging.getLogger("jobstead.scheduler")

#: Counting missed fire times for the log stops here (a per-second cron down for a week).
MISSED_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Fired:
    cron: str
    fire_at: datetime
    job_id: int


@dataclass(frozen=True)
class Skipped:
    cron: str
    fire_at: datetime
    #: ``deadline`` (found too late) or ``overlap`` (previous job still live).
    reason: SkipReason


@dataclass
class TickReport:
    """What one pass did, and when the next fire time of this scheduler's crons is."""

    fired: list[Fired] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    next_fire_at: datetime | None = None

    def upcoming(self, at: datetime) -> None:
        if self.next_fire_at is None or at < self.next_fire_at:
            self.next_fire_at = at


#: A worker that has not heartbeat for this long no longer vouches for its handlers and code crons.
WORKER_ALIVE = timedelta(seconds=60)
#: How often a database-scoped scheduler re-creates deleted code crons.
REPUBLISH_EVERY = 30.0


class CronScope(Protocol):
    """Whose crons a scheduler fires, and how it gets its store."""

    def open(self) -> Store:
        """Start-up, before the first pass; retried while the database is unreachable (``is_transient``)."""
        ...

    def is_transient(self, exc: BaseException) -> bool: ...

    def store(self) -> Store:
        """The open store, for each pass."""
        ...

    def crons(self, store: Store) -> tuple[Sequence[str], Collection[str]]:
        """The handlers whose crons are fired, and the code crons that may be (others are someone else's)."""
        ...

    def describe(self) -> str:
        """What the start-up log line says is scheduled."""
        ...


@dataclass(frozen=True)
class AppCrons:
    """An app's crons (``jobstead scheduler``, ``jobstead run``): those of its handlers, and of
    code crons only those it defines. Made by ``App.scheduler``, which checks the handler names."""

    #: Connect, migrate, publish the app's handlers and code crons (a deleted one comes back on start).
    open_app: Callable[[], Store]
    #: The app's store once open.
    current_store: Callable[[], Store]
    transient: Callable[[BaseException], bool]
    handlers: Sequence[str]
    #: The names of the app's code crons, as they are now.
    code_crons: Callable[[], Collection[str]]

    def open(self) -> Store:
        return self.open_app()

    def is_transient(self, exc: BaseException) -> bool:
        return self.transient(exc)

    def store(self) -> Store:
        return self.current_store()

    def crons(self, store: Store) -> tuple[Sequence[str], Collection[str]]:
        return self.handlers, set(self.code_crons())

    def describe(self) -> str:
        return f"handlers {','.join(self.handlers)}, code crons {','.join(sorted(self.code_crons())) or 'none'}"


class DatabaseCrons:
    """Every cron of a database, for a scheduler without app code (the operator's).

    The crons of every handler the database knows; of code crons, those that a
    live worker's app defines. It also re-creates, every ``republish_every``
    seconds, a code cron that someone deleted while workers defining it still
    run (one that was disabled stays disabled), from the definitions workers
    record on start.
    """

    def __init__(self, store: Store, *, republish_every: float = REPUBLISH_EVERY) -> None:
        self._store = store
        self.republish_every = republish_every
        self._republished_at: float | None = None

    def open(self) -> Store:
        return self._store

    def is_transient(self, exc: BaseException) -> bool:
        return False  # opening is handing over the store given: nothing to retry

    def store(self) -> Store:
        return self._store

    def crons(self, store: Store) -> tuple[Sequence[str], Collection[str]]:
        published = store.registry.published_crons(WORKER_ALIVE)
        if self._republished_at is None or time.monotonic() - self._republished_at >= self.republish_every:
            self._republished_at = time.monotonic()
            store.crons.publish(published)  # brings back deleted ones; keeps disabled ones disabled
        return list(store.registry.handlers()), {c.name for c in published}

    def describe(self) -> str:
        return "every handler the database knows"


class Scheduler:
    """Fires the crons of its scope: an app's (``app.scheduler()``) or a database's (``Scheduler(store=...)``)."""

    def __init__(
        self,
        scope: CronScope | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        interval: float = 1.0,
        install_signal_handlers: bool = True,
        republish_every: float = REPUBLISH_EVERY,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("the scheduler's interval must be positive")
        if scope is None and store is not None:
            scope = DatabaseCrons(store, republish_every=republish_every)
        elif scope is None or store is not None:
            raise ConfigurationError("a scheduler serves an app (app.scheduler()) or a database (store=...)")
        #: Whose crons it fires (``republish_every`` only matters to a database's).
        self.scope: CronScope = scope
        self.clock = clock
        self.interval = interval
        self.install_signal_handlers = install_signal_handlers
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._reported_invalid: set[tuple[str, str, str]] = set()
        #: Passes done: missed fires found on the first one are the downtime before this start.
        self._passes = 0
        self._signals = LoopSignals(lambda _sig: self.stop(), enabled=install_signal_handlers)

    @property
    def store(self) -> Store:
        return self.scope.store()

    # -- one pass ----------------------------------------------------------------

    def tick(self) -> TickReport:
        """Defer the jobs of every due fire time, once; safe beside any number of other schedulers."""
        store = self.store
        now = as_utc(self.clock()) if self.clock is not None else store.clock()
        handlers, code_crons = self.scope.crons(store)
        report = TickReport()
        for cron in store.crons.list_crons(handlers=handlers, enabled=True):
            if cron.source == "code" and cron.name not in code_crons:
                continue
            try:
                self._consider(store, cron, now, report)
            except Exception:  # one broken cron must not stop the others
                logger.exception("cron %s: could not be scheduled; trying again next pass", cron.name)
        self._passes += 1
        return report

    def _consider(self, store: Store, cron: CronRecord, now: datetime, report: TickReport) -> None:
        try:
            schedule = CronSchedule.parse(cron.schedule, cron.timezone)
        except InvalidSchedule as exc:
            key = (cron.name, cron.schedule, cron.timezone)
            if key not in self._reported_invalid:  # once, not every second
                self._reported_invalid.add(key)
                logger.error("cron %s is never fired: %s", cron.name, exc)
            return
        latest = schedule.latest_at_or_before(now)
        if latest is None or latest <= cron.handled_until:
            report.upcoming(schedule.next_after(max(cron.handled_until, now)))
            return
        report.upcoming(schedule.next_after(latest))
        late = (now - latest).total_seconds()
        if cron.starting_deadline is not None and late > cron.starting_deadline:
            if store.crons.skip(cron.name, latest, schedule=cron.schedule, timezone=cron.timezone):
                self._log_missed(schedule, cron, latest)
                logger.warning(
                    "cron %s: skipped fire time %s: found %.1f s late, past its starting deadline of %g s",
                    cron.name,
                    latest.isoformat(),
                    late,
                    cron.starting_deadline,
                )
                report.skipped.append(Skipped(cron.name, latest, SkipReason.DEADLINE))
            return
        if cron.overlap == "replace" and cron.last_job_id is not None:
            self._cancel_previous(store, cron)
        result = store.crons.fire(cron.name, latest, schedule=cron.schedule, timezone=cron.timezone, now=now)
        if result.outcome.handled_here:
            self._log_missed(schedule, cron, latest)
        if result.outcome is FireOutcome.FIRED:
            assert result.job_id is not None
            logger.info("cron %s: deferred job %s for %s", cron.name, result.job_id, latest.isoformat())
            report.fired.append(Fired(cron.name, latest, result.job_id))
        elif result.outcome is FireOutcome.OVERLAP:
            logger.info(
                "cron %s: skipped fire time %s: its previous job %s is still live",
                cron.name,
                latest.isoformat(),
                result.previous_job_id,
            )
            report.skipped.append(Skipped(cron.name, latest, SkipReason.OVERLAP))

    def _log_missed(self, schedule: CronSchedule, cron: CronRecord, latest: datetime) -> None:
        missed = schedule.count_between(cron.handled_until, latest, limit=MISSED_COUNT_LIMIT) - 1
        if missed > 0:
            # On this scheduler's first pass the gap is the downtime before it started (a second
            # `make run`): expected, so said calmly. Later, fires missed while it runs mean trouble.
            log = logger.info if self._passes == 0 else logger.warning
            log(
                "cron %s: %s%d fire time(s) from %s were missed (was no scheduler running?); only %s counts",
                cron.name,
                "over " if missed >= MISSED_COUNT_LIMIT - 1 else "",
                missed,
                schedule.next_after(cron.handled_until).isoformat(),
                latest.isoformat(),
            )

    def _cancel_previous(self, store: Store, cron: CronRecord) -> None:
        """``overlap="replace"``: stop the previous job before deferring the next (a no-op if it ended)."""
        assert cron.last_job_id is not None
        with contextlib.suppress(JobNotFound):  # pruned meanwhile
            job = store.control.cancel(cron.last_job_id)
            if job.cancel_requested:
                logger.info("cron %s: asked its previous job %s to stop, to replace it", cron.name, job.id)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT or ``stop()``; blocks the calling thread."""
        asyncio.run(self.run_async())

    def stop(self) -> None:
        """Stop after the current pass; callable from any thread or a signal handler."""
        self._stopping = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        sleeper = Sleeper(self._wake)
        self._signals.install()
        try:
            opened = await until_ready(
                self.scope.open,
                what="scheduler starting",
                is_transient=self.scope.is_transient,
                logger=logger,
                stopping=lambda: self._stopping,
                sleeper=sleeper,
            )
            if opened is None:
                return
            logger.info("scheduler started: %s", self.scope.describe())
            self.started.set()
            backoff = Backoff(0.5, 30.0)
            while not self._stopping:
                try:
                    report = await asyncio.to_thread(self.tick)
                except Exception as exc:
                    delay, _ = backoff.failed()
                    log_failure(logger, "scheduler pass", exc, backoff, delay)
                    await sleeper.sleep(delay)
                    continue
                if backoff.succeeded():
                    log_recovery(logger, "scheduler pass")
                await sleeper.sleep(self._delay(report))
        finally:
            self._signals.remove()
            if self.started.is_set():  # a start that failed says so itself, in one line
                logger.info("scheduler stopped")
            self.stopped.set()

    def _delay(self, report: TickReport) -> float:
        """Until the next fire time (a few ms after, so it is due), at most ``interval``."""
        if report.next_fire_at is None:
            return self.interval
        now = as_utc(self.clock()) if self.clock is not None else self.store.clock()
        return max(0.0, min(self.interval, (report.next_fire_at - now).total_seconds() + 0.005))


__all__ = ["AppCrons", "CronScope", "DatabaseCrons", "Fired", "Scheduler", "Skipped", "TickReport"]
