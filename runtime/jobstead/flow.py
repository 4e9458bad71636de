"""Flow control settings of a handler: what may start, how fast, and in which order.

These are values only: the handler decorator and the JobHandler resource both
build a ``FlowControl``, the store writes it with the handler's row, and the
claim enforces it. Keeping them in one frozen value means the code path and the
operator path cannot disagree on what a setting means.

Every check that needs nothing but the values themselves is made when they are
built (a ``RateLimit`` of zero, ``concurrency_per_key`` without
``concurrency_by``...), so the operator's values are checked as the code's are;
``FlowControl.check_keys`` adds what needs the handler's signature (the ``*_by``
names must be stored parameters). Every refusal is one ``InvalidOption`` naming
the option and showing a form that works.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Literal, get_args

from .errors import InvalidOption

#: What a sequence does when one of its jobs ends failed or dead.
SequenceOnFailure = Literal["hold", "continue"]
SEQUENCE_ON_FAILURE: tuple[SequenceOnFailure, ...] = get_args(SequenceOnFailure)

#: The key that is the job's tenant rather than one of its arguments.
TENANT = "tenant"

#: Period names a rate's text form takes, in seconds.
PERIODS = {"s": 1.0, "min": 60.0, "h": 3600.0}
#: The one text form: ASCII digits without sign or leading zero, "/", a period name; nothing
#: around them (no spaces, no newline: ``fullmatch``, and ``[0-9]`` where ``\d`` takes any
#: script's digits, which ``int`` would then read).
_RATE_TEXT = re.compile(r"(0|[1-9][0-9]*)/(s|min|h)", re.ASCII)
#: Shown in every refusal of a rate: the forms that work.
RATE_EXAMPLE = '"100/s", "10/min", "5/h" or RateLimit(100, per=1)'
#: What the text form is, in words, for the refusal of a text that is not it.
RATE_GRAMMAR = 'a whole number, "/" and s, min or h, with no spaces'
#: A rate is a ring of ``limit`` rows (``rate_slots``), written when its handler is published:
#: a million rows is seconds of work; more is refused rather than left to stall a start.
MAX_RATE_LIMIT = 1_000_000
#: The highest global limit (``concurrency``): N slots are N rows written when the handler is
#: published, and a claim reads its handler's slots; above this a limit costs more than it spares.
MAX_CONCURRENCY = 10_000
#: The longest window: one year, as the JobHandler's ``rateLimit.periodSeconds`` allows.
MAX_RATE_PERIOD = 31_536_000.0
#: Shared limit names: stored in a VARCHAR(200) column, like handler names.
MAX_NAME_LENGTH = 200
#: The largest ``concurrency_per_key``: what its INTEGER column holds.
MAX_PER_KEY = 2**31 - 1


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` job starts in any window of ``per`` seconds, across every worker.

    ``per`` is seconds (fractions allowed) or a ``timedelta``; it is kept as
    seconds, so two equal rates compare equal however they were written.
    """

    limit: int
    per: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise InvalidOption(
                "rate_limit", f"needs a positive whole number of starts, not {self.limit!r}; e.g. {RATE_EXAMPLE}"
            )
        per: object = self.per
        if isinstance(per, timedelta):
            per = per.total_seconds()
        if isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per) or per <= 0:
            raise InvalidOption(
                "rate_limit",
                f"needs a positive period in seconds or a timedelta, not {self.per!r}; e.g. {RATE_EXAMPLE}",
            )
        if per > MAX_RATE_PERIOD:
            raise InvalidOption(
                "rate_limit", f'needs a period of at most {MAX_RATE_PERIOD:.0f} s (a year), not {per:g} s; e.g. "5/h"'
            )
        if self.limit > MAX_RATE_LIMIT:
            per_second = math.ceil(self.limit / per)  # the same rate over one second, if a ring can hold it
            works = f'"{per_second}/s"' if per_second <= MAX_RATE_LIMIT else RATE_EXAMPLE
            raise InvalidOption(
                "rate_limit",
                f"allows at most {MAX_RATE_LIMIT} starts per period, not {self.limit}; "
                f"write the rate over a shorter period, e.g. {works}",
            )
        object.__setattr__(self, "per", float(per))

    @classmethod
    def parse(cls, value: object, option: str = "rate_limit") -> RateLimit:
        """A rate as users write it: ``"N/s"``, ``"N/min"``, ``"N/h"``, or a ``RateLimit``."""
        if isinstance(value, RateLimit):
            return value
        if isinstance(value, str):
            match = _RATE_TEXT.fullmatch(value)
            if match is not None:
                digits, period = match.groups()
                if len(digits) > len(str(MAX_RATE_LIMIT)):  # beyond the cap, and int() refuses thousands of digits
                    raise InvalidOption(
                        option, f"allows at most {MAX_RATE_LIMIT} starts per period, not {value!r}; e.g. {RATE_EXAMPLE}"
                    )
                try:
                    return cls(int(digits), per=PERIODS[period])
                except InvalidOption as exc:
                    raise InvalidOption(option, exc.detail) from None
            raise InvalidOption(
                option, f"must be a rate written as {RATE_GRAMMAR}, such as {RATE_EXAMPLE}, not {value!r}"
            )
        raise InvalidOption(option, f"must be a rate such as {RATE_EXAMPLE}, not {value!r}")

    def __str__(self) -> str:
        for name, seconds in PERIODS.items():
            if self.per == seconds:
                return f"{self.limit}/{name}"
        return f"{self.limit} per {self.per:g} s"

    @property
    def per_second(self) -> float:
        return self.limit / self.per


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

    def __post_init__(self) -> None:
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        for option in ("rate_limit_by", "concurrency_by", "sequence_by", "fair_by"):
            value = getattr(self, option)
            if value is not None and (not isinstance(value, str) or not value.isidentifier()):
                raise InvalidOption(
                    option, f'must name "tenant" or a parameter of the handler, e.g. "customer_id", not {value!r}'
                )
        if self.rate_limit_by is not None and self.rate_limit is None:
            raise InvalidOption("rate_limit_by", 'needs a rate_limit to apply per key: rate_limit="10/s"')
        names = self.rate_limits
        if (
            isinstance(names, str)
            or not isinstance(names, Iterable)
            or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_LENGTH for n in names)
        ):
            raise InvalidOption(
                "rate_limits", f'must be a list of names given to app.rate_limit, e.g. ["stripe"], not {names!r}'
            )
        object.__setattr__(self, "rate_limits", tuple(dict.fromkeys(names)))
        per_key = self.concurrency_per_key
        if per_key is not None:
            if isinstance(per_key, bool) or not isinstance(per_key, int) or not 1 <= per_key <= MAX_PER_KEY:
                raise InvalidOption(
                    "concurrency_per_key",
                    f"must be a whole number of at least 1 and at most {MAX_PER_KEY}, e.g. 2, not {per_key!r}",
                )
            if self.concurrency_by is None:
                raise InvalidOption(
                    "concurrency_per_key",
                    'needs concurrency_by, the key it counts per: concurrency_by="customer_id", concurrency_per_key=2',
                )
        elif self.concurrency_by is not None:
            raise InvalidOption(
                "concurrency_by",
                'needs concurrency_per_key, how many may run per key: concurrency_by="customer_id", '
                "concurrency_per_key=2",
            )
        if self.sequence_on_failure not in SEQUENCE_ON_FAILURE:
            raise InvalidOption(
                "sequence_on_failure", f'must be "hold" or "continue", not {self.sequence_on_failure!r}'
            )

    @property
    def is_none(self) -> bool:
        return self == NO_FLOW_CONTROL

    def keys(self) -> dict[str, str]:
        """Option -> the key it names, for each ``*_by`` that is set."""
        return {
            option: value
            for option in ("rate_limit_by", "concurrency_by", "sequence_by", "fair_by")
            if (value := getattr(self, option)) is not None
        }

    def check_keys(self, stored: Collection[str], injected: Collection[str] = (), *, accepts_any: bool = False) -> None:
        """Each ``*_by`` names ``"tenant"`` or a parameter stored with the job (not an injected one).

        ``accepts_any``: the handler takes ``**kwargs``, so any name may be an argument.
        Also ``sequence_on_failure`` without a ``sequence_by`` to apply to (as a JobHandler's
        ``sequenceOnFailure`` needs ``sequenceBy``): checked here, at registration, and not
        when a value is built, so a handler row written before is still read as it is.
        """
        if self.sequence_on_failure != "hold" and self.sequence_by is None:
            raise InvalidOption(
                "sequence_on_failure",
                'needs sequence_by, the key jobs are sequenced by: sequence_by="account_id", '
                f'sequence_on_failure="{self.sequence_on_failure}"',
            )
        for option, key in self.keys().items():
            if key == TENANT or key in stored:
                continue
            works = f'e.g. {option}="{min(stored, default=TENANT)}"'  # a form that works for this very handler
            if key in injected:
                raise InvalidOption(
                    option,
                    f"names {key!r}, which the worker injects when the job runs: name a stored argument, {works}",
                )
            if not accepts_any:
                known = ", ".join(sorted(stored)) or "none"
                raise InvalidOption(
                    option,
                    f"names {key!r}, which is not a parameter of the handler "
                    f'(its parameters: {known}; or "tenant"), {works}',
                )

    def check_shared(self, declared: Collection[str]) -> None:
        """Each of ``rate_limits`` is a shared limit declared with ``app.rate_limit``."""
        for name in self.rate_limits:
            if name not in declared:
                raise InvalidOption(
                    "rate_limits",
                    f'names {name!r}, which no app.rate_limit declares: app.rate_limit({name!r}, "100/s")',
                )


NO_FLOW_CONTROL = FlowControl()
#: The options of ``@app.handler`` that build a ``FlowControl``.
FLOW_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(FlowControl))
