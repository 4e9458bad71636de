"""How many worker pods a handler should have, without flapping.

replicas = clamp(ceil((due + running) / perPodConcurrency),
                 minReplicas, min(maxReplicas, ceil(concurrency / perPodConcurrency)))

Up at once: new work should not wait. Down only to the highest
recommendation seen during the stabilisation window (as the HPA does), and
to zero only after the handler has been idle for the cool-down: a queue that
empties between two bursts keeps its pods.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .spec import JobHandlerSpec


def recommended_replicas(spec: JobHandlerSpec, *, due: int, running: int) -> int:
    wanted = math.ceil((due + running) / spec.per_pod_concurrency)
    return max(spec.min_replicas, min(wanted, spec.replica_cap))


@dataclass
class Scaler:
    """Per-handler memory of recent recommendations; ``decide`` is called on every tick."""

    window_seconds: float = 60.0
    idle_cooldown_seconds: float = 120.0
    _history: deque[tuple[float, int]] = field(default_factory=deque)
    _last_busy: float | None = None

    def decide(self, spec: JobHandlerSpec, *, due: int, running: int, current: int, now: float) -> int:
        raw = recommended_replicas(spec, due=due, running=running)
        if due or running:
            self._last_busy = now
        self._history.append((now, raw))
        while self._history[0][0] < now - self.window_seconds:
            self._history.popleft()
        if raw >= current:
            return raw  # up (or steady) at once
        target = min(current, max(r for _, r in self._history))
        if target == 0 and self._last_busy is not None and now - self._last_busy < self.idle_cooldown_seconds:
            target = 1  # keep one warm pod until the handler has been idle for the cool-down
        return max(target, spec.min_replicas)
