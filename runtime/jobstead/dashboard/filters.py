"""Query parameters and form fields to values, refusing anything malformed with a one-line reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..status import JobStatus
from ..store.records import WORKFLOW_STATUSES
from .queries import JobFilter

MAX_TEXT = 200
FILTER_FIELDS = ("status", "handler", "queue", "tenant", "batch", "workflow", "q", "error")
#: Job ids are BIGINT: anything larger can name no job.
MAX_ID = 2**63 - 1


class BadInput(ValueError):
    """Shown as a 404 page carrying the message: the thing asked for does not exist."""


def job_id(raw: str, what: str = "job id") -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID or int(raw) < 1:
        raise BadInput(f"{what} must be a positive whole number, got {raw[:40]!r}")
    return int(raw)


def optional_id(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name, "").strip()
    return job_id(raw, name) if raw else None


def _text(params: Mapping[str, str], name: str) -> str | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > MAX_TEXT:
        raise BadInput(f"{name} is longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 for c in raw):
        raise BadInput(f"{name} contains control characters")
    return raw


def job_filter(params: Mapping[str, str]) -> JobFilter:
    unknown = sorted(set(params) - {*FILTER_FIELDS, "before"})
    if unknown:
        raise BadInput(f"unknown filter {unknown[0]!r}; filters are {', '.join(FILTER_FIELDS)}")
    status_text = _text(params, "status")
    status: JobStatus | None = None
    if status_text is not None:
        try:
            status = JobStatus(status_text)
        except ValueError:
            raise BadInput(f"no status {status_text!r}; statuses are {', '.join(s.value for s in JobStatus)}") from None
    return JobFilter(
        status=status,
        handler=_text(params, "handler"),
        queue=_text(params, "queue"),
        tenant=_text(params, "tenant"),
        batch=optional_id(params, "batch"),
        workflow=optional_id(params, "workflow"),
        q=_text(params, "q"),
        error=_text(params, "error"),
    )


def filter_from_form(form: Mapping[str, str]) -> JobFilter:
    """The filter a bulk form repeats in ``filter.*`` fields (kept out of the URL)."""
    prefix = "filter."
    return job_filter({k[len(prefix) :]: v for k, v in form.items() if k.startswith(prefix)})


@dataclass(frozen=True)
class WorkflowFilter:
    name: str | None = None
    tenant: str | None = None
    status: str | None = None


WORKFLOW_FILTERS = ("name", "tenant", "status")
#: Deeper than this a list's page is not worth counting through (a filter finds it faster).
MAX_OFFSET = 1_000_000


def workflow_filter(params: Mapping[str, str]) -> WorkflowFilter:
    unknown = sorted(set(params) - {*WORKFLOW_FILTERS, "offset"})
    if unknown:
        raise BadInput(f"unknown filter {unknown[0][:40]!r}; filters are {', '.join(WORKFLOW_FILTERS)}")
    status = _text(params, "status")
    if status is not None and status not in WORKFLOW_STATUSES:
        raise BadInput(f"no workflow status {status[:40]!r}; statuses are {', '.join(WORKFLOW_STATUSES)}")
    return WorkflowFilter(name=_text(params, "name"), tenant=_text(params, "tenant"), status=status)


def offset(params: Mapping[str, str]) -> int:
    """Where a page of a list starts: 0, or a whole number of rows to skip."""
    raw = params.get("offset", "").strip()
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_OFFSET:
        raise BadInput(f"offset must be a whole number up to {MAX_OFFSET:,}, got {raw[:40]!r}")
    return int(raw)
