"""Why a resource is Ready or not, and what the operator did: every reason it writes, named once.

A ``Reason`` is the ``Ready`` condition's reason, the reason of the Warning
Event posted with a failure, and the ``result`` label of
``jobstead_operator_reconcile_total``. The values are part of the interface
(users match on them in ``kubectl wait`` and alerts; the CRDs and the README
name them), so a member's value never changes.

Whether a failure heals by itself is decided here and nowhere else
(``recoverable``): the timers (the JobHandler's scale tick, the
CronSchedule's status tick) reconcile again while the last try failed for a
recoverable reason, and only then. The other failures wait for an edit of
the resource, which kopf hands to the reconciler anyway.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """The reason of a resource's ``Ready`` condition."""

    RECONCILED = "Reconciled"
    # What only an edit of the resource can fix.
    INVALID_SPEC = "InvalidSpec"
    INVALID_RETRY = "InvalidRetry"
    INVALID_SCHEDULE = "InvalidSchedule"
    INVALID_TIME_ZONE = "InvalidTimeZone"
    NAME_TAKEN = "NameTaken"
    # What can change without one: a Secret, a database, another resource, an app's workers.
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_UNREADABLE = "SecretUnreadable"
    INVALID_DATABASE_URL = "InvalidDatabaseURL"
    DATABASE_UNKNOWN = "DatabaseUnknown"
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    SCHEMA_MISSING = "SchemaMissing"
    HANDLER_UNKNOWN = "HandlerUnknown"
    UNKNOWN_PARAMETER = "UnknownParameter"

    @property
    def recoverable(self) -> bool:
        """Can heal without an edit of the resource, so a tick tries again.

        A Secret is created, fixed or made readable (it is re-read every few
        seconds); a database comes back or gets its tables (``jobstead
        migrate``); a JobHandler for a cron's handler is applied; an app's
        workers publish the handler, or publish a parameter a ``*By`` field
        names (a new version of the code). ``NameTaken`` is not: which of two crons
        of one name is meant is a person's choice, made by renaming one.
        """
        return self in _RECOVERABLE

    @classmethod
    def known(cls, value: object) -> Reason | None:
        """The reason a stored condition carries, or None (none, or one an older operator wrote)."""
        return next((reason for reason in cls if reason.value == value), None)


_RECOVERABLE = frozenset(
    {
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_UNREADABLE,
        Reason.INVALID_DATABASE_URL,
        Reason.DATABASE_UNKNOWN,
        Reason.DATABASE_UNAVAILABLE,
        Reason.SCHEMA_MISSING,
        Reason.HANDLER_UNKNOWN,
        Reason.UNKNOWN_PARAMETER,
    }
)


class Notice(StrEnum):
    """The reason of a Normal Event: something the operator did, not something that stands in its way."""

    DATABASE_CHANGED = "DatabaseChanged"
    SCALED = "Scaled"
