"""JobHandler and CronSchedule specs, fuzzed through the checks the webhook and the reconcilers share.

The values are of the types and within the bounds the CRD schema lets through
(the API server checks those before the webhook is called: a
``perPodConcurrency`` of 0 never reaches it), strings with any content: each spec is
accepted or refused with the webhook's one-line reason, never an exception
of another kind (that would be a 500 from the webhook and a crashed handler).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobstead.errors import ConfigurationError
from jobstead_operator.spec import CronScheduleSpec, JobHandlerSpec, SpecError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(max_size=20)
INT64 = 2**63 - 1


def at_least(minimum: int, maximum: int = INT64) -> st.SearchStrategy[int]:
    return st.integers(min_value=minimum, max_value=maximum)


INT = at_least(-INT64)


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


RETRY = _optional(
    {
        "policy": st.sampled_from(["Fixed", "Exponential", "Explicit"]),
        "maxAttempts": at_least(1),
        "delaySeconds": at_least(0),
        "delaysSeconds": st.lists(at_least(0), max_size=4),
        "maxDelaySeconds": at_least(0),
        "jitterPercent": at_least(0, 100),
    }
)
JOB_HANDLER = st.fixed_dictionaries(
    {
        "handler": TEXT,
        "app": st.one_of(TEXT, st.just("tests.apps.probes:app")),
        "image": TEXT,
        "database": st.fixed_dictionaries({"secretRef": st.fixed_dictionaries({"name": TEXT}, optional={"key": TEXT})}),
        "concurrency": at_least(1),
    },
    optional={
        "queue": TEXT,
        "perPodConcurrency": at_least(1),
        "minReplicas": at_least(0),
        "maxReplicas": at_least(1),
        "retry": RETRY,
        "timeoutSeconds": at_least(1),
        "paused": st.booleans(),
        "shutdownGraceSeconds": at_least(0),
        "metrics": _optional({"enabled": st.booleans(), "port": at_least(1, 65535)}),
    },
)
CRON_SCHEDULE = st.fixed_dictionaries(
    {
        "schedule": st.one_of(TEXT, st.sampled_from(["*/5 * * * *", "0 9 * * MON", "@daily", "* * * * * *"])),
        "handler": TEXT,
    },
    optional={
        "timeZone": st.one_of(TEXT, st.sampled_from(["UTC", "Europe/Tallinn", "Mars/Base", ""])),
        "args": st.dictionaries(TEXT, st.one_of(st.none(), INT, TEXT), max_size=3),
        "queue": TEXT,
        "priority": INT,
        "tenant": TEXT,
        "suspend": st.booleans(),
        "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace"]),
        "startingDeadlineSeconds": at_least(0),
    },
)


def _one_line(message: str) -> None:
    assert message.strip() and "\n" not in message and "Traceback" not in message, repr(message)


@SETTINGS
@given(spec=JOB_HANDLER)
def test_a_jobhandler_spec_is_parsed_or_refused_with_a_reason(spec: dict[str, Any]) -> None:
    try:
        parsed = JobHandlerSpec.parse(spec)
    except SpecError as exc:
        _one_line(str(exc))
        return
    assert 0 <= parsed.replica_cap <= parsed.max_replicas
    for default in (None, 9090):
        port = parsed.metrics.port_with(default)
        assert port is None or 1 <= port <= 65535


@SETTINGS
@given(name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True), spec=CRON_SCHEDULE)
def test_a_cronschedule_spec_is_accepted_or_refused_with_a_reason(name: str, spec: dict[str, Any]) -> None:
    try:
        CronScheduleSpec.parse(name, spec)
    except (SpecError, ConfigurationError) as exc:
        _one_line(str(exc))
