"""Retry delay policies: small values that map one-to-one onto the CRD's ``retry`` block."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigurationError

PolicyKind = Literal["fixed", "exponential", "explicit"]


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    ``fixed``: always ``delay``. ``exponential``: ``delay * 2 ** (n - 1)``, capped at
    ``max_delay``, then spread by +/- ``jitter`` (a fraction) so that a burst of
    failures does not come back as a burst. ``explicit``: the ``n``-th entry of
    ``delays``, the last one repeating.
    """

    kind: PolicyKind = "exponential"
    delay: float = 1.0
    max_delay: float | None = 3600.0
    jitter: float = 0.1
    delays: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential", "explicit"):
            raise ConfigurationError(f"retry policy kind must be fixed, exponential or explicit, not {self.kind!r}")
        if self.delay < 0 or (self.max_delay is not None and self.max_delay < 0):
            raise ConfigurationError("retry delays cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("retry jitter is a fraction between 0 and 1")
        if self.kind == "explicit" and not self.delays:
            raise ConfigurationError("an explicit retry policy needs at least one delay")
        if any(d < 0 for d in self.delays):
            raise ConfigurationError("retry delays cannot be negative")

    @classmethod
    def fixed(cls, delay: float) -> RetryPolicy:
        return cls(kind="fixed", delay=delay, max_delay=None, jitter=0.0)

    @classmethod
    def exponential(cls, base: float = 1.0, *, cap: float | None = 3600.0, jitter: float = 0.1) -> RetryPolicy:
        return cls(kind="exponential", delay=base, max_delay=cap, jitter=jitter)

    @classmethod
    def explicit(cls, delays: Sequence[float]) -> RetryPolicy:
        return cls(kind="explicit", delays=tuple(float(d) for d in delays), jitter=0.0, max_delay=None)

    @classmethod
    def coerce(cls, value: RetryPolicy | float | Sequence[float] | dict[str, Any] | None) -> RetryPolicy | None:
        """Accept the short forms users write: a number is fixed, a list explicit."""
        if value is None or isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool):
            raise ConfigurationError("retry must be a RetryPolicy, a number of seconds or a list of them")
        if isinstance(value, int | float):
            return cls.fixed(float(value))
        if isinstance(value, dict):
            return cls.from_json(value)
        if isinstance(value, Sequence) and not isinstance(value, str):
            return cls.explicit(value)
        raise ConfigurationError("retry must be a RetryPolicy, a number of seconds or a list of them")

    def delay_after(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        n = max(attempt, 1)
        if self.kind == "fixed":
            base = self.delay
        elif self.kind == "explicit":
            base = self.delays[min(n, len(self.delays)) - 1]
        else:
            base = self.delay * 2.0 ** min(n - 1, 62)
            if self.max_delay is not None:
                base = min(base, self.max_delay)
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(base, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
            "delays": list(self.delays),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        try:
            return cls(
                kind=data.get("kind", "exponential"),
                delay=float(data.get("delay", 1.0)),
                max_delay=None if data.get("max_delay") is None else float(data["max_delay"]),
                jitter=float(data.get("jitter", 0.1)),
                delays=tuple(float(d) for d in data.get("delays") or ()),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"invalid retry policy {data!r}: {exc}") from exc


DEFAULT_RETRY = RetryPolicy()
