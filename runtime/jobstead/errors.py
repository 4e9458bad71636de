"""Exceptions users catch, and the error record stored for a failed attempt."""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass
from typing import Any


class JobsteadError(Exception):
    """Base class of every error Jobstead raises on purpose."""


class ConfigurationError(JobsteadError):
    """The app, a handler or the database is set up in a way that cannot work."""


class InvalidArguments(JobsteadError, TypeError):
    """``defer`` was given arguments the handler cannot accept or the database cannot store.

    A ``TypeError`` too, so code that calls handlers directly catches it the same way.
    """


class InvalidOption(InvalidArguments):
    """A per-call option (``priority``, ``delay``, ``queue``...) that cannot be stored.

    ``option`` is the keyword's name, so the CLI can name its own flag instead.
    """

    def __init__(self, option: str, detail: str) -> None:
        self.option = option
        self.detail = detail
        super().__init__(f"{option} {detail}")


class UnknownHandler(JobsteadError, LookupError):
    """No handler of that name is registered (in the app, or in the database)."""


class JobNotFound(JobsteadError, LookupError):
    """No job has that id (it never existed, was pruned, or is not committed yet)."""


class InvalidState(JobsteadError):
    """The job is not in a state that allows the requested operation."""


class PermanentError(Exception):
    """Raise from a handler to fail the job at once, without further attempts.

    The job ends ``failed`` (not ``dead``): nothing was exhausted, the handler
    decided that trying again cannot help.
    """


class ArgumentsDoNotFit(InvalidArguments, PermanentError):
    """A job's stored arguments cannot be given to its handler as the code is now.

    A parameter renamed or made required since the job was deferred, or a
    resource the handler asks for that nobody declared: the handler never
    runs, and no retry could change that, so the worker fails the job at once.
    """


def type_name(kind: type[BaseException]) -> str:
    """How an error's type is recorded and shown: ``ValueError``, ``myapp.billing.CardDeclined``,
    and Jobstead's own by their public name, ``jobstead.PermanentError``.

    Jobstead's module paths are private (they move); an error class that is not
    exported is named by the nearest exported class it derives from.
    """
    if kind.__module__ == "builtins":
        return kind.__qualname__
    if kind.__module__ == "jobstead" or kind.__module__.startswith("jobstead."):
        import jobstead

        for base in kind.__mro__:
            if getattr(jobstead, base.__name__, None) is base:
                return f"jobstead.{base.__name__}"
    return f"{kind.__module__}.{kind.__qualname__}"


@dataclass(frozen=True)
class JobError:
    """What went wrong in an attempt, in a form that survives JSON."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobError:
        return cls(
            type=type_name(type(exc)),
            message=str(exc),
            traceback="".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        )

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JobError | None:
        if not data:
            return None
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


class JobFailed(JobsteadError):
    """Raised by ``Deferred.wait`` when the job ended without success.

    Carries the last attempt's error type, message and traceback, so the caller
    sees what the worker saw.
    """

    def __init__(self, job_id: int, status: str, error: JobError | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        self.type = error.type if error else ""
        self.message = error.message if error else ""
        self.traceback = error.traceback if error else ""
        detail = f"{self.type}: {self.message}" if error else "no error recorded"
        super().__init__(f"job {job_id} ended {status}: {detail}")


class JobCancelled(JobFailed):
    """Raised by ``Deferred.wait`` when the job was cancelled."""


class BatchNotFound(JobsteadError, LookupError):
    """No batch with that id (never created, rolled back, or pruned by retention)."""


class WorkflowNotFound(JobsteadError, LookupError):
    """No workflow with that id (never created, rolled back, or pruned by retention)."""
