"""How many worker pods a handler should have, without flapping, and why.

replicas = clamp(ceil((due + running) / perPodConcurrency),
                 minReplicas, min(maxReplicas, ceil(concurrency / perPodConcurrency), rate cap))

A handler with a global rate limit can keep busy no more jobs than its rate
times how long each runs (Little's law): the rate cap is
ceil(limit / periodSeconds x recent mean run time / perPodConcurrency), at
least 1 while work waits, so a backlog behind "10/s" does not start 50 pods
that would sit idle in the claim. A rate per key (``rateLimit.by``) has no
such cap: how many keys share the backlog is open.

Up at once: new work should not wait. Down only to the highest
recommendation seen during the stabilisation window (as the HPA does), and
to zero only after the handler has been idle for the cool-down: a queue that
empties between two bursts keeps its pods.

Every decision carries its inputs and a reason in words (``Decision``): the
operator writes them into the JobHandler's status, so "why 3 pods?" is
answered by ``kubectl get -o yaml`` and the dashboard's operator page, not by
reading this module. The reason names no seconds that tick down (a cool-down
says until when, in ``coolDownUntil``), so a steady handler's status does not
change on every tick.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from .spec import JobHandlerSpec


class Bound(StrEnum):
    """What held the replicas away from what the work needs (``status.scaling.limitedBy``)."""

    MAX_REPLICAS = "maxReplicas"
    LIMIT_CAP = "limitCap"
    RATE_CAP = "rateCap"
    MIN_REPLICAS = "minReplicas"
    WINDOW = "stabilizationWindow"
    COOL_DOWN = "coolDown"


@dataclass(frozen=True)
class Decision:
    """One scale tick's answer and what it was made from."""

    desired: int
    current: int
    due: int
    running: int
    #: ceil((due + running) / perPodConcurrency): the pods the work alone asks for.
    needed: int
    per_pod_concurrency: int
    concurrency: int
    #: ceil(concurrency / perPodConcurrency): more pods could never all be busy under the global limit.
    limit_cap: int
    min_replicas: int
    max_replicas: int
    limited_by: Bound | None = None
    #: Seconds before the handler may go to zero pods, while a warm pod is kept for the cool-down.
    cooldown_left: float | None = None
    window_seconds: float = 0.0
    cooldown_seconds: float = 0.0
    #: limit / periodSeconds of a global rate limit (None: the handler has none).
    rate_per_second: float | None = None
    #: The recent mean run time the rate cap is computed from (None: none measured yet).
    mean_run_seconds: float | None = None
    #: ceil(rate_per_second x mean_run_seconds / perPodConcurrency), at least 1 while work waits.
    rate_cap: int | None = None

    @property
    def changes(self) -> bool:
        return self.desired != self.current

    @property
    def reason(self) -> str:
        """A short sentence: the verb, what held it, and the arithmetic (``scale up: 41 due + 6 running need ...``)."""
        verb = "scale up" if self.desired > self.current else "scale down" if self.desired < self.current else ""
        need = self._need()
        bound = self.limited_by
        if bound is Bound.MAX_REPLICAS:
            held = f"held at max {self.max_replicas}"
        elif bound is Bound.LIMIT_CAP:
            per_pod = self.per_pod_concurrency
            held = f"held at the limit cap {self.limit_cap} (concurrency {self.concurrency}, {per_pod} per pod)"
        elif bound is Bound.RATE_CAP:
            held = f"held at the rate cap {self.rate_cap} ({self._rate_arithmetic()})"
        elif bound is Bound.MIN_REPLICAS:
            held = f"held at min {self.min_replicas}"
        elif bound is Bound.WINDOW:
            held = f"held at {self.desired} for the {self.window_seconds:g} s stabilisation window"
        elif bound is Bound.COOL_DOWN:
            return f"{verb + ', ' if verb else ''}cool-down: one pod kept until idle for {self.cooldown_seconds:g} s"
        elif not verb:
            return "idle: nothing due or running" if not self.due + self.running else f"steady: {need}"
        else:
            return f"{verb}: {need}"
        return f"{verb + ', ' if verb else ''}{held}: {need}"

    def _rate_arithmetic(self) -> str:
        rate = f"rate {self.rate_per_second:.3g}/s"
        if self.mean_run_seconds is None:
            return f"{rate}, no run time measured yet"
        return f"{rate} x {self.mean_run_seconds:g} s mean run / {self.per_pod_concurrency} per pod"

    def _need(self) -> str:
        work = self.due + self.running
        if not work:
            return "nothing due or running"
        pods = "pod" if self.needed == 1 else "pods"
        return f"{self.due} due + {self.running} running need {self.needed} {pods} of {self.per_pod_concurrency}"


def recommended_replicas(spec: JobHandlerSpec, *, due: int, running: int, rate_cap: int | None = None) -> int:
    wanted = math.ceil((due + running) / spec.per_pod_concurrency)
    cap = spec.replica_cap if rate_cap is None else min(spec.replica_cap, rate_cap)
    return max(spec.min_replicas, min(wanted, cap))


def rate_per_second(spec: JobHandlerSpec) -> float | None:
    """A global rate limit's starts per second; None without one, or with one per key (``rateLimit.by``)."""
    rate = spec.flow.rate_limit
    if rate is None or spec.flow.rate_limit_by is not None:
        return None
    return rate.limit / rate.per


def measured(seconds: float | None) -> float | None:
    """A mean run time to two significant digits: what the status shows and the cap is computed from.

    Rounded so that a steady handler's reason and status do not change on
    every tick with the third digit of a mean.
    """
    return float(f"{seconds:.2g}") if seconds is not None else None


def rate_cap(spec: JobHandlerSpec, mean_run_seconds: float | None, *, busy: bool) -> int | None:
    """The most pods a global rate limit can keep busy (None: the handler has no such limit).

    ceil(rate x mean run time / perPodConcurrency), and at least 1 while work
    waits or runs: with no run time measured yet that is 1 pod, whose
    attempts then give the measure.
    """
    rate = rate_per_second(spec)
    if rate is None:
        return None
    pods = 0 if mean_run_seconds is None else math.ceil(rate * mean_run_seconds / spec.per_pod_concurrency - 1e-9)
    return max(pods, 1 if busy else 0)


@dataclass(frozen=True)
class Change:
    """One change of replicas, as the status keeps it (``status.recentDecisions``)."""

    time: str
    from_replicas: int
    to_replicas: int
    reason: str

    def as_status(self) -> dict[str, object]:
        return {"time": self.time, "from": self.from_replicas, "to": self.to_replicas, "reason": self.reason}

    @classmethod
    def from_status(cls, raw: object) -> Change | None:
        """A stored entry, or None if it is not one (an older operator's, or an edited status)."""
        if not isinstance(raw, dict):
            return None
        try:
            return cls(str(raw["time"]), int(raw["from"]), int(raw["to"]), str(raw["reason"]))
        except (KeyError, TypeError, ValueError):
            return None


#: How many changes of replicas a JobHandler's status keeps, newest first.
RECENT_CHANGES = 5
#: Seconds between two reads of a rate-limited handler's mean run time, once finished attempts gave one.
RUN_TIME_EVERY = 30.0


@dataclass
class Scaler:
    """Per-handler memory of recent recommendations and changes; ``decide`` is called on every tick."""

    window_seconds: float = 60.0
    idle_cooldown_seconds: float = 120.0
    _history: deque[tuple[float, int]] = field(default_factory=deque)
    _last_busy: float | None = None
    #: The last changes of replicas, newest first; seeded from the status after an operator restart.
    recent: deque[Change] = field(default_factory=lambda: deque(maxlen=RECENT_CHANGES))
    remembered: bool = False
    #: The last mean run time read (only for a rate-limited handler), and whether finished attempts gave it.
    mean_run_seconds: float | None = None
    _run_time_from_finished: bool = False
    _run_time_read_at: float | None = None

    def wants_run_time(self, now: float) -> bool:
        """Read it every tick until finished attempts give one (the cap grows from 1 pod), then every 30 s."""
        if self._run_time_read_at is None or not self._run_time_from_finished:
            return True
        return now - self._run_time_read_at >= RUN_TIME_EVERY

    def take_run_time(self, mean_seconds: float | None, *, finished: bool, now: float) -> None:
        """What the store read; a window with no attempt at all keeps the last measure rather than forget it."""
        self._run_time_read_at = now
        if mean_seconds is not None or self.mean_run_seconds is None:
            self.mean_run_seconds = mean_seconds
            self._run_time_from_finished = finished

    def decide(
        self,
        spec: JobHandlerSpec,
        *,
        due: int,
        running: int,
        current: int,
        now: float,
        mean_run_seconds: float | None = None,
    ) -> Decision:
        """``mean_run_seconds``: the handler's recent mean run time, read only for a rate-limited handler."""
        needed = math.ceil((due + running) / spec.per_pod_concurrency)
        limit_cap = -(-spec.concurrency // spec.per_pod_concurrency)
        mean = measured(mean_run_seconds)
        by_rate = rate_cap(spec, mean, busy=bool(due or running))
        raw = recommended_replicas(spec, due=due, running=running, rate_cap=by_rate)
        if due or running:
            self._last_busy = now
        self._history.append((now, raw))
        while self._history[0][0] < now - self.window_seconds:
            self._history.popleft()
        bound: Bound | None = None
        if needed > raw:
            if by_rate is not None and by_rate < min(limit_cap, spec.max_replicas):
                bound = Bound.RATE_CAP
            else:
                bound = Bound.LIMIT_CAP if limit_cap < spec.max_replicas else Bound.MAX_REPLICAS
        elif needed < raw:
            bound = Bound.MIN_REPLICAS
        cooldown_left: float | None = None
        if raw >= current:
            desired = raw  # up (or steady) at once
        else:
            target = min(current, max(r for _, r in self._history))
            if target > raw:
                bound = Bound.WINDOW
            if target == 0 and self._last_busy is not None and now - self._last_busy < self.idle_cooldown_seconds:
                target = 1  # keep one warm pod until the handler has been idle for the cool-down
                bound = Bound.COOL_DOWN
                cooldown_left = self.idle_cooldown_seconds - (now - self._last_busy)
            if target < spec.min_replicas:
                target, bound = spec.min_replicas, Bound.MIN_REPLICAS
            desired = target
        return Decision(
            desired=desired,
            current=current,
            due=due,
            running=running,
            needed=needed,
            per_pod_concurrency=spec.per_pod_concurrency,
            concurrency=spec.concurrency,
            limit_cap=limit_cap,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            limited_by=bound,
            cooldown_left=cooldown_left,
            window_seconds=self.window_seconds,
            cooldown_seconds=self.idle_cooldown_seconds,
            rate_per_second=rate_per_second(spec),
            mean_run_seconds=mean,
            rate_cap=by_rate,
        )

    def remember(self, stored: object) -> None:
        """Take the changes a previous operator wrote into the status, once, so a restart keeps the history."""
        if self.remembered:
            return
        self.remembered = True
        if isinstance(stored, list):
            for change in reversed(stored[:RECENT_CHANGES]):
                parsed = Change.from_status(change)
                if parsed is not None:
                    self.recent.appendleft(parsed)

    def record(self, decision: Decision, time: str, *, note: str = "") -> Change:
        change = Change(time, decision.current, decision.desired, decision.reason + note)
        self.recent.appendleft(change)
        return change
