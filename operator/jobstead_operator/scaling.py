"""How many worker pods a handler should have, without flapping, and why.

replicas = clamp(ceil((due + running) / perPodConcurrency),
                 minReplicas, min(maxReplicas, ceil(concurrency / perPodConcurrency)))

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

    def _need(self) -> str:
        work = self.due + self.running
        if not work:
            return "nothing due or running"
        pods = "pod" if self.needed == 1 else "pods"
        return f"{self.due} due + {self.running} running need {self.needed} {pods} of {self.per_pod_concurrency}"


def recommended_replicas(spec: JobHandlerSpec, *, due: int, running: int) -> int:
    wanted = math.ceil((due + running) / spec.per_pod_concurrency)
    return max(spec.min_replicas, min(wanted, spec.replica_cap))


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

    def decide(self, spec: JobHandlerSpec, *, due: int, running: int, current: int, now: float) -> Decision:
        needed = math.ceil((due + running) / spec.per_pod_concurrency)
        limit_cap = -(-spec.concurrency // spec.per_pod_concurrency)
        raw = recommended_replicas(spec, due=due, running=running)
        if due or running:
            self._last_busy = now
        self._history.append((now, raw))
        while self._history[0][0] < now - self.window_seconds:
            self._history.popleft()
        bound: Bound | None = None
        if needed > raw:
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
