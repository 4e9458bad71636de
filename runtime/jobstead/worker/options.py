"""How a worker is asked to run: ``app.worker(...)``'s keywords, checked once.

A frozen value rather than a dozen attributes set (and checked) in the
worker's ``__init__``: the worker's parts each read what they need from it,
and a bad value is refused with one line naming it before anything starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    #: Claim from these queues only (``None``: every queue of the worker's handlers).
    queues: Sequence[str] | None = None
    #: Jobs run at once by this worker (its slots).
    concurrency: int = 10
    #: Run these of the app's handlers (``None``: all of them).
    handlers: Sequence[str] | None = None
    lease_seconds: float = 30.0
    #: How often leases are renewed and settings re-read (``None``: a sixth of the lease, at most 5 s).
    heartbeat_seconds: float | None = None
    #: At most this many database connections (by default 10, and 20 more while all are busy).
    pool_size: int | None = None
    #: With nothing to claim, look again after this long even without a wake-up.
    poll_interval: float = 1.0
    #: On SIGTERM or ``stop()``, wait this long for running jobs before cancelling and releasing them.
    shutdown_grace: float = 30.0
    #: Wake up on NOTIFY where the database has it (PostgreSQL).
    listen: bool = True
    #: Stop gracefully on SIGTERM/SIGINT (only possible on the main thread).
    install_signal_handlers: bool = True
    #: Serve this process's Prometheus metrics on this port.
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        for option, names in (("queues", self.queues), ("handlers", self.handlers)):
            if isinstance(names, str):
                raise ConfigurationError(f"{option} must be a list of names, not the string {names!r}")
        # Copies: a list the caller changes later must not change a running worker.
        object.__setattr__(self, "queues", tuple(self.queues) if self.queues else None)
        object.__setattr__(self, "handlers", None if self.handlers is None else tuple(self.handlers))
        for option, value, smallest in (
            ("concurrency", self.concurrency, 1),
            ("lease_seconds", self.lease_seconds, None),
            ("poll_interval", self.poll_interval, None),
            ("heartbeat_seconds", self.heartbeat_seconds, None),
            ("pool_size", self.pool_size, 1),
        ):
            if value is None:
                continue
            if smallest is not None and value < smallest:
                raise ConfigurationError(f"{option} must be at least {smallest}, not {value}")
            if value <= 0:
                raise ConfigurationError(f"{option} must be positive, not {value}")
        if self.shutdown_grace < 0:
            raise ConfigurationError(f"shutdown_grace must be 0 or more, not {self.shutdown_grace}")
        if self.heartbeat_seconds is not None and self.heartbeat_seconds >= self.lease_seconds:
            raise ConfigurationError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than lease_seconds "
                f"({self.lease_seconds})"
            )
        if self.metrics_port is not None and not (0 < self.metrics_port < 65536):
            raise ConfigurationError(f"metrics_port must be a TCP port (1-65535), not {self.metrics_port}")

    @property
    def heartbeat(self) -> float:
        """Seconds between lease renewals: as given, else a sixth of the lease (at most 5 s, at least 50 ms)."""
        return self.heartbeat_seconds or max(min(self.lease_seconds / 6, 5.0), 0.05)
