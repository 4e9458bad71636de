"""Building new jobs: the one place a caller's options meet a handler's defaults.

``defer`` and ``defer_many`` (``handler.py``), ``handler.job`` (a batch's members
and continuations), ``jobstead defer`` and a cron's fire all build their
``NewJob`` here, so queue, priority, run time, key, tenant and metadata are
resolved the same way whoever asks. And the one definition of which jobs
"share their options" (``option_key``, ``same_options``): jobs that differ in
their arguments only go into one INSERT (``Enqueuer``, the PostgreSQL driver),
which writes the first one's options for all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from operator import attrgetter
from typing import Any

from ..clock import as_utc
from ..flow import NO_FLOW_CONTROL, TENANT, FlowControl
from ..retry import RetryPolicy
from .records import NewJob, evolve

#: Where a job goes when neither it nor its handler's row names a queue or priority.
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0


@dataclass(frozen=True)
class JobDefaults:
    """What a handler gives the jobs whose caller leaves it unset: from its code, or its row."""

    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    #: Which arguments the flow control keys are read from (``flow_keys``).
    flow: FlowControl = field(default=NO_FLOW_CONTROL)

    @cached_property
    def keys_by(self) -> dict[str, str]:
        """``flow.keys()``, worked out once: a handler keeps its defaults from one defer to the next."""
        return self.flow.keys()


def new_jobs(
    handler: str,
    arguments: Iterable[dict[str, Any]],
    defaults: JobDefaults,
    *,
    clock: Callable[[], datetime],
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    key: str | None = None,
    tenant: str | None = None,
    metadata: dict[str, Any] | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    cron_name: str | None = None,
    cron_fire_at: datetime | None = None,
) -> list[NewJob]:
    """One job per set of ``arguments``, all with the same options.

    ``None`` takes the handler's default (queue, priority) or, for the settings
    a job stores only when overridden (``max_attempts``, ``retry``,
    ``timeout``), stays ``None`` so the handler's value at run time applies.
    A ``delay`` counts from now, read from ``clock`` once for all of them.
    """
    arguments = iter(arguments)
    first = next(arguments, None)
    if first is None:
        return []
    relative = delay.total_seconds() if run_at is None and delay is not None else None
    if run_at is not None:
        run_at = as_utc(run_at)
    elif delay is not None:
        run_at = clock() + delay
    # A copy of a blank job, not a frozen init: setting each of two dozen fields through
    # object.__setattr__ was most of a single defer's time in this function.
    proto = evolve(
        _BLANK,
        handler=handler,
        args=first,
        queue=defaults.queue if queue is None else queue,
        priority=defaults.priority if priority is None else priority,
        run_at=run_at,
        key=key,
        tenant=tenant,
        metadata=metadata,
        max_attempts=max_attempts,
        retry=retry,
        timeout=timeout,
        cron_name=cron_name,
        cron_fire_at=cron_fire_at,
        delay=relative,
    )
    by = defaults.keys_by
    if not by:
        # The others differ from the first in their arguments only: copies, not frozen inits.
        return [proto, *(evolve(proto, args=args) for args in arguments)]
    return [evolve(proto, args=args, **_keys_read(by, args)) for args in (first, *arguments)]


#: What ``new_jobs`` copies: every field at its default.
_BLANK = NewJob(handler="", args={}, queue=DEFAULT_QUEUE)


#: The stored keys' column width (VARCHAR(200)); a longer key is stored as its digest.
MAX_KEY_LENGTH = 200
#: Each ``*_by`` option and the job column its key is stored in.
KEY_COLUMNS = {
    "rate_limit_by": "rate_key",
    "concurrency_by": "concurrency_key",
    "sequence_by": "sequence_key",
    "fair_by": "fair_key",
}


def flow_keys(flow: FlowControl, args: dict[str, Any]) -> dict[str, str | None]:
    """The flow control keys of a job with these arguments, by ``NewJob`` field.

    Read once here, at defer, and stored with the job: a claim compares
    columns and never parses arguments. A key that names ``tenant`` stays
    NULL (the claim reads the job's ``tenant`` column, which a batch may set
    after this); a missing or null argument is NULL too.
    """
    return _keys_read(flow.keys(), args)


def _keys_read(by: dict[str, str], args: dict[str, Any]) -> dict[str, str | None]:
    """``flow_keys`` with the flow control's ``keys()`` read once for many jobs."""
    return {KEY_COLUMNS[option]: None if name == TENANT else key_text(args.get(name)) for option, name in by.items()}


def key_text(value: Any) -> str | None:
    """An argument's value as a key: strings as they are, anything else as canonical JSON;
    longer than a column holds, its SHA-256 (equal values still give equal keys)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


#: What each job of one INSERT has of its own: its arguments, and the keys read from them.
PER_JOB_FIELDS = ("args", *KEY_COLUMNS.values())
#: Every other field of a new job: jobs equal in all of them share one INSERT.
#: Derived from ``NewJob`` itself, so a field added there is part of it at once.
OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(NewJob) if f.name not in PER_JOB_FIELDS)
_options = attrgetter(*OPTION_FIELDS)
_METADATA = OPTION_FIELDS.index("metadata")


def same_options(job: NewJob, other: NewJob) -> bool:
    """Whether two jobs differ in their arguments (and the keys read from them) at most (``defer_many``'s do)."""
    return bool(_options(job) == _options(other))


def share_options(jobs: Sequence[NewJob]) -> bool:
    """``same_options`` for every job against the first: the first's options read once, not once per job."""
    if not jobs:
        return True
    first = _options(jobs[0])
    return all(_options(job) == first for job in islice(jobs, 1, None))


def option_key(job: NewJob) -> tuple[Any, ...]:
    """``same_options`` as a hashable key, for grouping (metadata as canonical JSON)."""
    key = list(_options(job))
    if job.metadata is not None:
        key[_METADATA] = json.dumps(job.metadata, sort_keys=True)
    return tuple(key)


def member_of(job: NewJob, batch_id: int, tenant: str | None) -> NewJob:
    """``job`` as a member of batch ``batch_id``: it carries the batch, and the batch's tenant if it has one."""
    return evolve(job, batch_id=batch_id, tenant=tenant if tenant is not None else job.tenant)
