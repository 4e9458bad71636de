"""Flow control settings of a handler: what may start, how fast, and in which order.

These are values only: the handler decorator and the JobHandler resource both
build a ``FlowControl``, the store writes it with the handler's row, and the
claim enforces it. Keeping them in one frozen value means the code path and the
operator path cannot disagree on what a setting means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: What a sequence does when one of its jobs ends failed or dead.
SequenceOnFailure = Literal["hold", "continue"]


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` job starts in any window of ``per`` seconds, across every worker."""

    limit: int
    per: float


@dataclass(frozen=True)
class FlowControl:
    """Every flow control of one handler; the default is none at all (claims as before)."""

    rate_limit: RateLimit | None = None
    #: ``"tenant"`` or a stored parameter of the handler: one rate window per value.
    rate_limit_by: str | None = None
    #: Names of shared limits (``app.rate_limit``) this handler's starts count against.
    rate_limits: tuple[str, ...] = ()
    concurrency_by: str | None = None
    concurrency_per_key: int | None = None
    sequence_by: str | None = None
    sequence_on_failure: SequenceOnFailure = "hold"
    fair_by: str | None = None

    @property
    def is_none(self) -> bool:
        return self == NO_FLOW_CONTROL


NO_FLOW_CONTROL = FlowControl()
